"""Turn a prompt's words into a small scene spec: light, weather, elements, palette, mood.

Pure keyword matching, no NLP: good enough to make "golden-hour mountains" and "neon city at
night" look like what they say. Prompts with no known words still get a stable scene chosen
from a hash of their words, so the same prompt always looks the same.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Literal

RGB = tuple[float, float, float]
Light = Literal["golden", "sunset", "dawn", "day", "night"]
Weather = Literal["clear", "fog", "storm"]
Mood = Literal["neutral", "calm", "epic", "dreamy", "moody", "vibrant"]

# A keyword matches a whole word or, if it has a space, a whole phrase.
LIGHT_WORDS: dict[Light, tuple[str, ...]] = {
    "golden": ("golden hour", "golden-hour", "magic hour", "golden light", "late afternoon", "warm light"),
    "sunset": ("sunset", "sunsets", "dusk", "evening", "twilight", "sundown"),
    "dawn": ("sunrise", "dawn", "morning", "daybreak", "first light"),
    "night": ("night", "nights", "midnight", "moon", "moonlit", "moonlight", "nocturnal", "starry", "nighttime"),
    "day": ("midday", "noon", "day", "daytime", "sunny", "afternoon", "daylight", "summer", "blue sky"),
}
WEATHER_WORDS: dict[Weather, tuple[str, ...]] = {
    "storm": ("storm", "stormy", "thunder", "thunderstorm", "lightning", "rain", "rainy", "tempest", "hurricane"),
    "fog": ("fog", "foggy", "mist", "misty", "haze", "hazy", "smoky", "smoke", "mysterious"),
}
ELEMENT_WORDS: dict[str, tuple[str, ...]] = {
    "mountains": (
        "mountain",
        "mountains",
        "peak",
        "peaks",
        "alps",
        "alpine",
        "summit",
        "ridge",
        "ridges",
        "cliffs",
        "volcano",
        "himalaya",
        "himalayas",
        "range",
        "landscape",
        "valley",
    ),
    "hills": ("hill", "hills", "rolling", "countryside", "highlands"),
    "city": (
        "city",
        "cities",
        "skyline",
        "downtown",
        "metropolis",
        "skyscraper",
        "skyscrapers",
        "urban",
        "street",
        "streets",
        "buildings",
        "tokyo",
        "new york",
        "cyberpunk",
        "town",
    ),
    "neon": ("neon", "cyberpunk", "synthwave", "vaporwave", "retrowave", "blade runner"),
    "water": (
        "ocean",
        "sea",
        "seas",
        "beach",
        "coast",
        "coastal",
        "shore",
        "lake",
        "river",
        "bay",
        "harbor",
        "harbour",
        "waves",
        "seaside",
        "island",
        "water",
        "reflection",
        "reflections",
        "lagoon",
        "pond",
    ),
    "lake": ("lake", "lakes", "pond", "river", "reflection", "reflections", "lagoon", "mirror", "still water"),
    "beach": ("beach", "shore", "sand", "sandy", "tropical", "island", "coast"),
    "forest": (
        "forest",
        "forests",
        "trees",
        "woods",
        "woodland",
        "pine",
        "pines",
        "jungle",
        "grove",
        "taiga",
        "redwood",
        "redwoods",
    ),
    "desert": ("desert", "dune", "dunes", "sahara", "arid", "canyon"),
    "space": (
        "space",
        "galaxy",
        "galaxies",
        "nebula",
        "cosmos",
        "cosmic",
        "universe",
        "astronaut",
        "orbit",
        "milky way",
        "interstellar",
        "outer space",
    ),
    "planet": ("planet", "planets", "saturn", "jupiter", "alien world", "exoplanet"),
    "snow": ("snow", "snowy", "winter", "ice", "icy", "frozen", "glacier", "arctic", "frost", "frosty"),
    "field": (
        "field",
        "fields",
        "meadow",
        "meadows",
        "flower",
        "flowers",
        "prairie",
        "grass",
        "grassland",
        "lavender",
        "tulips",
        "farm",
        "garden",
        "spring",
        "wildflowers",
        "poppies",
    ),
    "clouds": ("cloud", "clouds", "cloudy", "sky", "skies", "cloudscape", "heaven", "heavens", "overcast"),
    "stars": ("star", "stars", "starry", "starlight", "constellation", "constellations", "milky way"),
}
#: Things drawn in front of the setting, when their words appear (see render/objects.py).
OBJECT_WORDS: dict[str, tuple[str, ...]] = {
    "lighthouse": ("lighthouse", "lighthouses", "beacon"),
    "boat": ("boat", "boats", "ship", "ships", "sailboat", "sailboats", "yacht", "yachts", "sailing",
             "canoe", "ferry", "schooner", "galleon", "dinghy"),
    "castle": ("castle", "castles", "fortress", "citadel", "palace", "tower", "towers", "watchtower", "keep"),
    "house": ("house", "houses", "cabin", "cabins", "cottage", "cottages", "hut", "farmhouse", "chalet",
              "lodge", "barn", "home", "shack"),
    "tree": ("tree", "lone tree", "oak", "baobab", "willow", "acacia", "old tree"),
    "bridge": ("bridge", "bridges", "viaduct", "aqueduct"),
    "windmill": ("windmill", "windmills", "mill"),
    "birds": ("bird", "birds", "gull", "gulls", "seagull", "seagulls", "flock", "crows", "geese", "swallows",
              "ravens", "doves", "cranes"),
    "balloon": ("balloon", "balloons", "hot air balloon", "hot-air", "airship", "zeppelin"),
    "person": ("person", "figure", "traveler", "traveller", "wanderer", "man", "woman", "girl", "boy", "hiker",
               "explorer", "child", "someone", "stranger", "silhouette", "monk", "knight", "pilgrim",
               "people", "couple", "walker", "lone figure"),
    "car": ("car", "cars", "taxi", "taxis", "truck", "van", "traffic", "jeep", "convertible", "road trip"),
}  # fmt: skip
MOOD_WORDS: dict[Mood, tuple[str, ...]] = {
    "calm": ("calm", "serene", "peaceful", "tranquil", "quiet", "gentle", "still", "soft", "minimal"),
    "epic": ("epic", "dramatic", "majestic", "grand", "powerful", "cinematic", "vast", "towering"),
    "dreamy": ("dreamy", "ethereal", "magical", "fantasy", "whimsical", "dream", "surreal", "enchanted"),
    "moody": ("dark", "moody", "gloomy", "ominous", "eerie", "melancholy", "lonely", "sad", "haunting"),
    "vibrant": ("vibrant", "vivid", "colorful", "colourful", "bright", "bold", "saturated", "neon"),
}
COLOUR_WORDS: dict[str, RGB] = {
    "red": (0.90, 0.20, 0.18),
    "crimson": (0.78, 0.08, 0.22),
    "scarlet": (0.95, 0.18, 0.12),
    "orange": (1.00, 0.55, 0.15),
    "amber": (1.00, 0.68, 0.20),
    "yellow": (1.00, 0.88, 0.30),
    "gold": (1.00, 0.76, 0.30),
    "golden": (1.00, 0.76, 0.30),
    "pink": (1.00, 0.50, 0.70),
    "magenta": (0.95, 0.20, 0.75),
    "purple": (0.58, 0.30, 0.85),
    "violet": (0.55, 0.35, 0.95),
    "lavender": (0.72, 0.62, 0.92),
    "indigo": (0.30, 0.25, 0.75),
    "blue": (0.20, 0.45, 0.95),
    "teal": (0.10, 0.65, 0.65),
    "turquoise": (0.20, 0.80, 0.78),
    "cyan": (0.15, 0.85, 0.95),
    "green": (0.25, 0.70, 0.30),
    "emerald": (0.10, 0.65, 0.40),
    "silver": (0.80, 0.84, 0.90),
    "white": (0.95, 0.95, 0.97),
}


@dataclass(frozen=True)
class Palette:
    sky: tuple[RGB, RGB, RGB]  # zenith, middle, horizon
    sun: RGB  # sun (or moon) disc and its glow
    haze: RGB  # colour of distant air and fog
    light: RGB  # direct light falling on land
    shadow: RGB  # darkest land tone
    brightness: float  # how lit the land is, 0 (night) .. 1 (noon)
    accents: tuple[RGB, ...]  # neon signs, flowers, lit windows


@dataclass(frozen=True)
class SceneSpec:
    light: Light
    weather: Weather
    elements: frozenset[str]
    mood: Mood
    palette: Palette
    sun_height: float  # of the sun/moon above the horizon, as a fraction of the sky's height
    tints: tuple[RGB, ...]  # colours the prompt names, in order (for an unknown prompt: one picked by hash)
    digest: int  # stable hash of the prompt's words: seeds everything the words decide
    known: bool  # False when no keyword matched and the scene came from the hash
    objects: frozenset[str] = frozenset()  # things to draw in front of the setting (OBJECT_WORDS)
    plural: frozenset[str] = frozenset()  # objects the prompt names in the plural ("balloons")
    words: frozenset[str] = frozenset()  # the prompt's words, for details ("paper" boat, "cabin")
    object_tints: tuple[tuple[str, RGB], ...] = ()  # (object, colour) a colour word names: "a red balloon"


BASE_PALETTES: dict[Light, Palette] = {
    "golden": Palette(
        ((0.30, 0.46, 0.74), (0.86, 0.70, 0.56), (1.00, 0.77, 0.45)),
        (1.00, 0.84, 0.55),
        (0.98, 0.76, 0.52),
        (1.00, 0.78, 0.52),
        (0.20, 0.13, 0.13),
        0.80,
        ((1.00, 0.80, 0.45), (0.95, 0.45, 0.30), (1.00, 0.92, 0.70)),
    ),
    "sunset": Palette(
        ((0.14, 0.14, 0.38), (0.78, 0.36, 0.44), (1.00, 0.56, 0.26)),
        (1.00, 0.62, 0.30),
        (0.86, 0.46, 0.42),
        (1.00, 0.55, 0.35),
        (0.12, 0.06, 0.12),
        0.50,
        ((1.00, 0.55, 0.30), (0.90, 0.30, 0.50), (1.00, 0.80, 0.45)),
    ),
    "dawn": Palette(
        ((0.38, 0.50, 0.78), (0.90, 0.72, 0.76), (1.00, 0.86, 0.72)),
        (1.00, 0.93, 0.78),
        (0.86, 0.80, 0.86),
        (1.00, 0.88, 0.80),
        (0.26, 0.25, 0.38),
        0.65,
        ((1.00, 0.70, 0.75), (0.70, 0.60, 0.95), (1.00, 0.90, 0.60)),
    ),
    "day": Palette(
        ((0.16, 0.40, 0.82), (0.42, 0.65, 0.94), (0.80, 0.89, 0.98)),
        (1.00, 0.98, 0.92),
        (0.76, 0.85, 0.95),
        (1.00, 0.97, 0.90),
        (0.18, 0.26, 0.26),
        1.00,
        ((0.95, 0.30, 0.25), (1.00, 0.85, 0.25), (0.65, 0.45, 0.95)),
    ),
    "night": Palette(
        ((0.01, 0.02, 0.06), (0.03, 0.06, 0.16), (0.10, 0.15, 0.30)),
        (0.93, 0.95, 1.00),
        (0.14, 0.18, 0.32),
        (0.55, 0.65, 0.95),
        (0.01, 0.015, 0.04),
        0.14,
        ((1.00, 0.78, 0.45), (0.70, 0.85, 1.00), (1.00, 0.90, 0.70)),
    ),
}
NEON_ACCENTS: tuple[RGB, ...] = ((1.00, 0.18, 0.70), (0.10, 0.90, 1.00), (0.65, 0.30, 1.00), (1.00, 0.55, 0.15))
SUN_HEIGHT: dict[Light, float] = {"golden": 0.16, "sunset": 0.04, "dawn": 0.07, "day": 0.62, "night": 0.55}

# What a prompt with no scene words gets, picked by hash: pleasant, varied compositions.
FALLBACK_SCENES: tuple[tuple[str, ...], ...] = (
    ("hills", "water"), ("mountains", "water"), ("field", "hills"), ("mountains", "forest"),
    ("desert",), ("hills", "clouds"), ("mountains", "clouds"), ("water", "clouds"),
)  # fmt: skip
FALLBACK_LIGHTS: tuple[Light, ...] = ("golden", "sunset", "dawn", "day", "night", "golden", "sunset")
FALLBACK_TINTS = ("pink", "purple", "teal", "gold", "blue", "orange", "lavender", "magenta")


#: Words that name no subject (articles, prepositions, pronouns): neither drawn nor "not understood".
FILLER_WORDS = frozenset(
    "a an the of on in at with and or by from to over under into onto above below near beside behind "
    "through across along around between among its his her their my our your this that these those "
    "is are was were be being some very while as for has have few many lots lot".split()
)
#: Words a colour word may stand away from the object it colours ("a red hot-air balloon").
OBJECT_TINT_REACH = 3


def words_of(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*", prompt.lower())


def stable_digest(*parts: object) -> int:
    """A 64-bit hash that, unlike hash(), is the same in every process."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _matches(text: str, words: set[str], keywords: tuple[str, ...]) -> bool:
    return any((f" {k} " in text) if " " in k else k in words for k in keywords)


def _keyword_tables() -> list[tuple[str, ...]]:
    return [
        *LIGHT_WORDS.values(),
        *WEATHER_WORDS.values(),
        *ELEMENT_WORDS.values(),
        *OBJECT_WORDS.values(),
        *MOOD_WORDS.values(),
        tuple(COLOUR_WORDS),
    ]


def understanding(prompt: str) -> tuple[list[str], list[str]]:
    """The prompt's words the renderer draws (keywords and phrases, in prompt order) and the ones
    it cannot (no keyword; grammar words left out): what the studio and the job's metadata show."""
    tokens = words_of(prompt)
    keywords = {k for table in _keyword_tables() for k in table}
    phrases = sorted((k for k in keywords if " " in k), key=len, reverse=True)
    drawn: list[str] = []
    unknown: list[str] = []
    index = 0
    while index < len(tokens):
        phrase = next((p for p in phrases if tokens[index : index + p.count(" ") + 1] == p.split(" ")), None)
        word = phrase or tokens[index]
        if phrase or word in keywords:
            drawn.append(word)
        elif word not in FILLER_WORDS and len(word) > 1:
            unknown.append(word)
        index += word.count(" ") + 1
    return list(dict.fromkeys(drawn)), list(dict.fromkeys(unknown))


def _object_tints(tokens: list[str]) -> tuple[tuple[str, RGB], ...]:
    """The objects colour words describe: a colour word colours the first object named within
    OBJECT_TINT_REACH words after it ("a red hot-air balloon", "a white sailboat")."""
    tints: dict[str, RGB] = {}
    for index, word in enumerate(tokens):
        if word not in COLOUR_WORDS:
            continue
        ahead = " ".join(tokens[index + 1 : index + 1 + OBJECT_TINT_REACH])
        ahead_words = ahead.split(" ")
        for position in range(len(ahead_words)):
            rest = f" {' '.join(ahead_words[position:])} "
            found = next(
                (o for o, keys in OBJECT_WORDS.items() if any(rest.startswith(f" {k} ") for k in keys) and o not in tints),
                None,
            )
            if found:
                tints[found] = COLOUR_WORDS[word]
                break
    return tuple(tints.items())


def parse_prompt(prompt: str) -> SceneSpec:
    """What to paint for this prompt. Words that are not keywords only matter through the digest."""
    tokens = words_of(prompt)
    words = set(tokens)
    text = f" {' '.join(tokens)} "
    digest = stable_digest("scene", " ".join(tokens))
    pick = _picker(digest)

    elements = {e for e, keys in ELEMENT_WORDS.items() if _matches(text, words, keys)}
    objects = {o for o, keys in OBJECT_WORDS.items() if _matches(text, words, keys)}
    many = {w for w in words if w.endswith("s") or w in ("flock", "people", "traffic", "couple", "geese")}
    plural = {o for o in objects if many & set(OBJECT_WORDS[o]) or (o == "birds" and "flock" in many)}
    if words & {"lone", "single", "solitary", "one", "alone"}:
        plural = set()
    lights = [light for light, keys in LIGHT_WORDS.items() if _matches(text, words, keys)]
    weathers = [w for w, keys in WEATHER_WORDS.items() if _matches(text, words, keys)]
    moods = [m for m, keys in MOOD_WORDS.items() if _matches(text, words, keys)]
    golden_hour = "golden" in lights
    object_tints = _object_tints(tokens)
    for_objects = {rgb for _, rgb in object_tints}  # a colour an object takes does not tint the sky as well
    named = [w for w in dict.fromkeys(tokens) if w in COLOUR_WORDS and not (w == "golden" and golden_hour)]
    tints = tuple(COLOUR_WORDS[w] for w in named if COLOUR_WORDS[w] not in for_objects)

    scene_words = elements - {"clouds", "stars"}
    known = bool(elements or lights or weathers or objects)
    if not scene_words:
        elements |= set(pick(FALLBACK_SCENES, 1))
    if objects & {"lighthouse", "boat"}:
        elements.add("water")  # boats float and lighthouses stand on a coast
    if "neon" in elements:
        elements.add("city")
    if "lake" in elements:
        elements.add("water")
    if "planet" in elements and not scene_words - {"planet"}:
        elements.add("space")
    if elements & {"city"} and not elements & {"water", "field", "desert", "forest", "snow"} and "car" not in objects:
        elements.add("water")  # a waterfront: the skyline and its lights get a reflection

    if lights:
        light = lights[0]
    elif elements & {"neon", "space"} or "stars" in elements:
        light = "night"
    elif weathers == ["fog"]:
        light = pick(("dawn", "day", "golden", "dawn"), 2)  # fog reads best lit softly
    elif weathers == ["storm"]:
        light = pick(("day", "sunset", "golden"), 2)
    else:
        light = pick(FALLBACK_LIGHTS, 2)
    weather: Weather = weathers[0] if weathers else "clear"
    mood: Mood = moods[0] if moods else "neutral"

    palette = BASE_PALETTES[light]
    if "neon" in elements:
        magenta = (0.42, 0.10, 0.46)
        sky = (palette.sky[0], _mix(palette.sky[1], magenta, 0.3), _mix(palette.sky[2], magenta, 0.6))
        palette = replace(palette, sky=sky, accents=NEON_ACCENTS, haze=_mix(palette.haze, magenta, 0.6))
    palette = _weather_palette(palette, weather)
    if tints:
        palette = _tint_palette(palette, tints)
    elif not known:  # a mood colour of its own, so unknown prompts differ from each other
        tints = (COLOUR_WORDS[pick(FALLBACK_TINTS, 3)],)
        palette = _tint_palette(palette, tints)
    palette = _mood_palette(palette, mood)
    return SceneSpec(light, weather, frozenset(elements), mood, palette, SUN_HEIGHT[light], tints, digest, known,
                     frozenset(objects), frozenset(plural), frozenset(words), object_tints)  # fmt: skip


def _picker(digest: int):
    def pick(options, salt: int):
        return options[stable_digest(digest, salt) % len(options)]

    return pick


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    red, green, blue = (x + (y - x) * t for x, y in zip(a, b, strict=True))
    return red, green, blue


def _map_palette(p: Palette, fn) -> Palette:
    return replace(p, sky=tuple(fn(c) for c in p.sky), sun=fn(p.sun), haze=fn(p.haze), light=fn(p.light),
                   shadow=fn(p.shadow), accents=tuple(fn(c) for c in p.accents))  # fmt: skip


def _weather_palette(p: Palette, weather: Weather) -> Palette:
    if weather == "storm":  # slate greys that keep a trace of the light's colour
        p = _map_palette(p, lambda c: _mix(c, _scale((0.34, 0.37, 0.43), 0.4 + sum(c) / 2.5), 0.7))
        return replace(p, brightness=p.brightness * 0.6)
    if weather == "fog":  # a pale veil: the sky and the distance melt into one soft haze
        haze = _mix(p.haze, _scale((0.84, 0.86, 0.88), 0.3 + p.brightness * 0.7), 0.5)
        zenith, middle, horizon = (_mix(c, haze, 0.55 + 0.1 * i) for i, c in enumerate(p.sky))
        return replace(p, haze=haze, sky=(zenith, middle, horizon))
    return p


def _tint_palette(p: Palette, tints: tuple[RGB, ...]) -> Palette:
    """Colour words pull the sky and haze toward them; they also become the accent colours."""
    first, last = tints[0], tints[-1]
    zenith, middle, horizon = p.sky
    lum = (sum(zenith) + sum(middle)) / 6
    sky = (_mix(zenith, _scale(first, 0.3 + lum), 0.35), _mix(middle, _scale(first, 0.4 + lum), 0.45),
           _mix(horizon, last, 0.3))  # fmt: skip
    return replace(p, sky=sky, haze=_mix(p.haze, last, 0.25), accents=tints + p.accents[: max(0, 3 - len(tints))])


def _mood_palette(p: Palette, mood: Mood) -> Palette:
    if mood == "moody":
        return replace(_map_palette(p, lambda c: _desaturate(c, 0.3)), brightness=p.brightness * 0.75)
    if mood == "dreamy":
        return _map_palette(p, lambda c: _mix(c, (0.95, 0.85, 1.0), 0.12))
    if mood == "vibrant":
        return _map_palette(p, lambda c: _desaturate(c, -0.3))
    return p


def _scale(c: RGB, k: float) -> RGB:
    red, green, blue = (min(1.0, x * k) for x in c)
    return red, green, blue


def _desaturate(c: RGB, amount: float) -> RGB:
    grey = sum(c) / 3
    red, green, blue = (min(1.0, max(0.0, x + (grey - x) * amount)) for x in c)
    return red, green, blue
