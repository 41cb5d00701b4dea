"""Job events: the in-process bus subscribers listen to (bus.py), the stored event log that gives
each event its sequence number (log.py), and the PostgreSQL LISTEN relay that brings other
instances' events onto this instance's bus (relay.py).

May import backend.store only."""
