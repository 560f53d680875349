"""Basic English for the tiny model: a word list for its tokenizer and template sentences for its
text-only language-modelling warm-up.

A real BLIP tokenizes with BERT's 30,522-piece vocabulary, learned from general English: everyday
words such as "rectangle", "black" or "contain" are single tokens there. The tiny tokenizer is learned
here from the synthetic scenes' text, which knows only the scene vocabulary; without this list, any
other word is spelled out letter by letter (five tokens for "rectangle"). The tokenizer corpus adds
these general words (colours, shapes, numbers, positions, common objects, question and function
words) so that downstream text is tokenized the way a real vocabulary would. It is a fixed list of
common English, written without looking at any downstream dataset's text; the model itself never
trains on it (it sees scene captions only).
"""

BASIC_ENGLISH = tuple("""
a an the this that these those it its there here what which who whom whose where when why how
is are was were be been being am do does did doing done have has had having can could will would
shall should may might must not no yes nor or and but if then than so too very also only just
of in on at by for with without from to into onto over under above below between behind beside
near far inside outside around through across along against toward towards up down out off
left right top bottom middle center centre front back side corner edge next upper lower
i you he she we they me him her us them my your his our their mine yours
one two three four five six seven eight nine ten eleven twelve zero first second third last
many much more most few fewer less least some any all both each every other another same different
big small large little tiny huge long short tall wide narrow thick thin high low round square flat
color colour colors colours shape shapes size sizes number numbers kind type pattern
red green blue yellow orange purple pink white black gray grey brown teal cyan magenta violet
indigo turquoise beige tan maroon navy olive silver gold golden dark light bright pale
circle circles square squares triangle triangles rectangle rectangles diamond diamonds star stars
cross crosses oval ellipse hexagon pentagon octagon heart arrow line lines dot dots ring cube
sphere cone cylinder box ball object objects thing things item items picture image images photo
photograph scene view background foreground shown shows show showing see seen sees looks look
contain contains containing contained present absent visible include includes including made
man woman men women person people boy girl child children baby player players group team crowd
dog dogs cat cats horse horses bird birds cow cows sheep elephant elephants bear bears giraffe zebra
car cars bus buses train trains truck trucks bike bicycle motorcycle plane airplane boat boats
table chair chairs bed couch sofa bench desk room kitchen bathroom window door wall floor road street
tree trees grass field water sky snow beach sea ocean river mountain hill park city building house
food pizza cake sandwich plate bowl cup glass bottle fruit banana apple orange vegetables
phone computer laptop keyboard screen television clock sign light umbrella kite frisbee ball bat
shirt hat glasses bag hand hands head face eyes hair
sitting standing walking running riding holding eating playing flying lying looking wearing
sits stands walks runs rides holds eats plays flies lies wears parked
""".split())


# Word classes for `general_sentences` (all in BASIC_ENGLISH).
_COLORS = ("red green blue yellow orange purple pink white black gray grey brown teal cyan magenta violet indigo "
           "turquoise beige tan maroon navy olive silver gold").split()
_SHAPES = ("circle square triangle rectangle diamond star cross oval ellipse hexagon pentagon octagon heart arrow line "
           "dot ring cube sphere cone cylinder").split()
_THINGS = (
    "man woman person boy girl child baby player dog cat horse bird cow sheep elephant bear giraffe zebra car bus "
    "train truck bike bicycle motorcycle plane airplane boat table chair bed couch sofa bench desk window door wall "
    "tree field road street house building pizza cake sandwich plate bowl cup glass bottle banana apple phone "
    "computer laptop keyboard screen television clock sign umbrella kite frisbee ball shirt hat bag box"
).split()
_PLACES = "room kitchen bathroom park city beach field street road sky water snow grass".split()
_SIZES = (
    "big small large little tiny huge long short tall wide narrow thick thin round flat dark light bright pale".split()
)
_PREPS = ["in", "on", "near", "behind", "beside", "under", "above", "below", "inside", "outside", "next to",
          "in front of", "on top of", "to the left of", "to the right of"]
_VERBS = "sitting standing walking running riding holding eating playing flying lying looking wearing".split()
_NUMBERS = "one two three four five six seven eight nine ten".split()


def general_sentences(n: int, seed: int = 0) -> list[str]:
    """`n` simple English sentences from templates over BASIC_ENGLISH, deterministic in `seed`.

    They stand in for the general text a real BLIP's BERT-initialised text model has read: every
    colour, shape, object and function word of the list occurs, including "yes" and "no", so the
    tiny decoder learns to write these words at all (a word it never had to predict keeps an
    untrained output row, which a PEFT method, with the output layer frozen, can hardly use). They
    describe no image and are not questions and answers about images."""
    import numpy as np

    rng = np.random.default_rng([seed, 7919])
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731

    def thing():
        return (
            f"{pick(['a', 'the', 'this', 'that'])} {pick(_SIZES + _COLORS + [''])} {pick(_THINGS + _SHAPES)}".replace(
                "  ", " "
            )
        )

    templates = [
        lambda: f"{thing()} is {pick(_PREPS)} {thing()}",
        lambda: f"{thing()} is {pick(_COLORS)}",
        lambda: f"{pick(['the', 'a'])} {pick(_THINGS)} is {pick(_VERBS)} {pick(_PREPS)} the {pick(_PLACES)}",
        lambda: f"{pick(_NUMBERS)} {pick(_COLORS)} {pick(_SHAPES)}s are {pick(_PREPS)} {thing()}",
        lambda: f"yes , {thing()} is {pick(_COLORS)}",
        lambda: f"no , {thing()} is not {pick(_COLORS)}",
        lambda: f"yes , it is a {pick(_SHAPES)}",
        lambda: f"no , it is not a {pick(_SHAPES)}",
        lambda: f"there are {pick(_NUMBERS)} {pick(_THINGS)}s {pick(_PREPS)} the {pick(_PLACES)}",
        lambda: f"{pick(['yes', 'no'])} , there {pick(['is', 'was'])} {thing()} {pick(_PREPS)} the {pick(_PLACES)}",
        lambda: (
            f"the {pick(_SHAPES)} {pick(['has', 'shows', 'contains'])} {pick(_COLORS)} and {pick(_COLORS)} "
            f"{pick(['lines', 'dots', 'colors'])}"
        ),
        lambda: (
            f"which {pick(['color', 'shape', 'kind', 'size'])} {pick(['does', 'is', 'was'])} {thing()} "
            f"{pick(['have', 'show', 'contain'])}"
        ),
    ]
    return [templates[int(rng.integers(len(templates)))]().strip() for _ in range(n)]
