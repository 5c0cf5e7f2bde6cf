"""CIFAR-100 class names and the fine → coarse (superclass) mapping.

Transcribed from the table published with the dataset (Krizhevsky, 2009; see
``shared/reference/cifar100_superclasses.md``). Fine-label indices are the
alphabetical order of the 100 fine names (0 = apple, 1 = aquarium_fish, …,
99 = worm), which is the order of the ``fine_labels`` in the CIFAR-100 python
batches; coarse indices follow the table (0 = aquatic_mammals … 19 = vehicles_2),
as do the batches' ``coarse_labels``.

The order of the five fine classes *inside* each superclass is the table's
listed order. It matters: the asymmetric noise of the TURN paper maps each fine
class to the next one of its superclass in this order, cyclically (see
:func:`noisyft.data.noise.asymmetric_noise`).
"""
from __future__ import annotations

# (coarse name, its five fine classes in the table's order); position = coarse index.
SUPERCLASSES: tuple[tuple[str, tuple[str, str, str, str, str]], ...] = (
    ("aquatic_mammals", ("beaver", "dolphin", "otter", "seal", "whale")),
    ("fish", ("aquarium_fish", "flatfish", "ray", "shark", "trout")),
    ("flowers", ("orchid", "poppy", "rose", "sunflower", "tulip")),
    ("food_containers", ("bottle", "bowl", "can", "cup", "plate")),
    ("fruit_and_vegetables", ("apple", "mushroom", "orange", "pear", "sweet_pepper")),
    ("household_electrical_devices", ("clock", "keyboard", "lamp", "telephone", "television")),
    ("household_furniture", ("bed", "chair", "couch", "table", "wardrobe")),
    ("insects", ("bee", "beetle", "butterfly", "caterpillar", "cockroach")),
    ("large_carnivores", ("bear", "leopard", "lion", "tiger", "wolf")),
    ("large_man-made_outdoor_things", ("bridge", "castle", "house", "road", "skyscraper")),
    ("large_natural_outdoor_scenes", ("cloud", "forest", "mountain", "plain", "sea")),
    ("large_omnivores_and_herbivores", ("camel", "cattle", "chimpanzee", "elephant", "kangaroo")),
    ("medium_mammals", ("fox", "porcupine", "possum", "raccoon", "skunk")),
    ("non-insect_invertebrates", ("crab", "lobster", "snail", "spider", "worm")),
    ("people", ("baby", "boy", "girl", "man", "woman")),
    ("reptiles", ("crocodile", "dinosaur", "lizard", "snake", "turtle")),
    ("small_mammals", ("hamster", "mouse", "rabbit", "shrew", "squirrel")),
    ("trees", ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")),
    ("vehicles_1", ("bicycle", "bus", "motorcycle", "pickup_truck", "train")),
    ("vehicles_2", ("lawn_mower", "rocket", "streetcar", "tank", "tractor")),
)

#: The 20 superclass names; index = CIFAR-100 coarse label.
COARSE_CLASSES: tuple[str, ...] = tuple(name for name, _ in SUPERCLASSES)

#: The 100 fine class names in alphabetical order; index = CIFAR-100 fine label.
FINE_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

_FINE_INDEX = {name: i for i, name in enumerate(FINE_CLASSES)}

#: Coarse label of each fine label: ``FINE_TO_COARSE[fine_index] -> coarse_index``.
FINE_TO_COARSE: tuple[int, ...] = tuple(
    c for _, c in sorted((_FINE_INDEX[f], c) for c, (_, fines) in enumerate(SUPERCLASSES) for f in fines)
)

#: The TURN asymmetric map by name: each fine class → the next fine class of its
#: superclass in the table's order, cyclically (beaver → dolphin, …, whale → beaver).
SUPERCLASS_NEXT: dict[str, str] = {
    fines[k]: fines[(k + 1) % len(fines)] for _, fines in SUPERCLASSES for k in range(len(fines))
}


def superclass_next_indices() -> list[int]:
    """``nxt[i]`` = fine index that fine class ``i`` flips to under the superclass map."""
    return [_FINE_INDEX[SUPERCLASS_NEXT[name]] for name in FINE_CLASSES]


def _check_tables() -> None:
    # Cheap import-time consistency check: a transcription slip must fail loudly.
    fines = [f for _, fs in SUPERCLASSES for f in fs]
    assert len(SUPERCLASSES) == 20 and all(len(fs) == 5 for _, fs in SUPERCLASSES)
    assert sorted(fines) == list(FINE_CLASSES) and len(set(fines)) == 100
    assert len(FINE_TO_COARSE) == 100


_check_tables()
