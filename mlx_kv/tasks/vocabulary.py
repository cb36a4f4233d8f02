"""The words the synthetic tasks are made of.

Keys, values and variable names are short words, three-digit numbers and
three-letter names so that a small tokenizer keeps each one as one token;
keys never appear in filler.
"""

from __future__ import annotations

import random

NOUNS = (
    "river forest garden window table letter market village mountain island "
    "bridge library teacher farmer doctor painter sailor student mother father "
    "child friend neighbor stranger king queen soldier merchant baker driver "
    "engine machine lamp candle mirror basket bottle blanket carpet chair "
    "kitchen station harbor tower castle temple palace school office factory "
    "road street path valley desert ocean lake meadow field cloud storm rain "
    "snow wind sun moon star morning evening night winter summer autumn spring "
    "story song poem book paper picture map clock key coin ring box bag boat "
    "train plane horse dog cat bird fish tree flower stone shell rope wheel "
    "door wall roof floor bread cheese apple soup tea coffee milk honey salt"
).split()
VERBS = (
    "carried found opened watched painted built followed crossed visited "
    "cleaned repaired counted noticed remembered described planted collected "
    "borrowed delivered measured cooked washed climbed studied finished "
    "started moved lifted pushed pulled touched covered filled emptied sold "
    "bought kept shared showed missed reached left passed closed checked"
).split()
ADJECTIVES = (
    "old new small large quiet busy bright dark warm cold heavy light green "
    "red blue yellow white black wooden silver golden narrow wide tall short "
    "empty full strange simple careful gentle famous ancient distant nearby "
    "tired happy calm brave clever patient rough smooth soft"
).split()
ADVERBS = (
    "slowly quickly quietly carefully often rarely always never suddenly "
    "gently early late soon again together alone nearly almost"
).split()
PLACES = (
    "the north", "the south", "the east", "the west", "the city", "the coast",
    "the hills", "the square", "the port", "the border", "the capital", "the plains",
)
CONNECTIVES = ("then", "later", "meanwhile", "afterwards", "so", "but", "and", "yet")
TIMES = (
    "in the morning", "at night", "before noon", "after dinner", "during the storm",
    "on the first day", "every week", "last year", "in the evening", "at dawn",
)

# keys for the needle tasks (never used in filler)
KEYS = (
    "alpha bravo delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu amber azure beige coral crimson cyan ebony emerald "
    "fuchsia indigo ivory jade khaki lavender lemon lilac magenta maroon mint "
    "navy ochre olive orchid peach plum ruby saffron scarlet sepia teal topaz "
    "violet aspen birch cedar cypress elm fir hazel juniper larch laurel maple "
    "oak pine poplar rowan spruce sycamore walnut willow yew badger beaver "
    "bison camel cobra condor coyote crane falcon ferret gecko heron hyena "
    "ibis jackal koala lemur llama lynx marmot mole moose otter panda parrot "
    "pelican puma quail raven salmon seal shark sloth stork swan tiger toucan "
    "trout turtle viper walrus weasel wolf wombat zebra anchor anvil arrow "
    "banner barrel beacon blade bucket cannon chisel compass crown dagger "
    "drum feather flute funnel hammer harp helmet kettle ladder lantern lever "
    "magnet needle paddle pencil piano prism pulley quill saddle scroll shield "
    "shovel sickle spoon spring sword thimble torch trumpet violin whistle"
).split()
KEYS = tuple(k for k in KEYS if k not in set(NOUNS))

VALUES = tuple(str(v) for v in range(100, 1000))


def _make_var_names() -> tuple[str, ...]:
    rng = random.Random(1234)
    letters = "BCDFGHJKLMNPQRSTVWXZ"
    vowels = "AEIOUY"
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < 160:
        n = rng.choice(letters) + rng.choice(vowels) + rng.choice(letters)
        if n not in seen:
            seen.add(n)
            names.append(n)
    return tuple(names)


VAR_NAMES = _make_var_names()

# words for the common-words list (aggregation)
CWE_WORDS = tuple(sorted(set(NOUNS) | set(ADJECTIVES)))
