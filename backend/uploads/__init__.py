"""Users' own pictures: checked, cleaned and stored (`images.py`), owned and expired (`service.py`)."""
