"""Embedded synthetic ReID benchmark: procedurally rendered pedestrians in the Market-1501 layout.

Why it exists: the demo pipeline must run end to end on 2 CPU cores with no download, and still
pose the problem CCAFL solves. So identities are built from combinable attributes (many are
near-duplicates: hard negatives inside a camera) and every camera has its own photometric and
geometric signature (colour cast, background, dominant viewpoint, framing, blur, noise, JPEG,
occluders), which makes naive features match camera before person. `shift_strength` scales all
camera differences, so 0 gives a control benchmark with identical cameras.

Layout under the dataset root (Market-1501 naming ``{pid:04d}_c{cam}s1_{frame:06d}_00.jpg``):
``bounding_box_train/``, ``query/``, ``bounding_box_test/`` (with distractors pid 0000 and junk
pid -1), ``pretrain/`` (identities disjoint from train and test, for caption pretraining),
``captions.parquet`` and ``spec.json``.

``captions.parquet`` has one row per image of every split: ``path`` (posix, relative to the
root), ``split`` (train / query / gallery / pretrain), ``pid`` (0 distractor, -1 junk),
``camera`` (0-based), ``caption`` (one sentence naming only what is visible in that image) and
one column per attribute (ATTRIBUTE_COLUMNS) holding the value *as seen in that image*: null
when hidden by viewpoint, occlusion or framing (a backpack seen from the front is null, a
person without a bag is "none"; a logo seen from the back reads "solid").

The package follows the making of an image: `spec` (the parameters), `vocabulary` (attributes
and label codes), `identities`, `cameras`, `drawing` (a person into a label map), `rendering`
(colour, camera transform, caption), `plan` (who, where, which split), `writing` (the files),
and `diagnostic` (how much colour alone tells the camera).
"""

from ccafl.data.synthetic.diagnostic import camera_bias_diagnostic
from ccafl.data.synthetic.identities import sample_identities
from ccafl.data.synthetic.rendering import caption_for, web_caption
from ccafl.data.synthetic.spec import SyntheticSpec
from ccafl.data.synthetic.vocabulary import ATTRIBUTE_CHOICES, ATTRIBUTE_COLUMNS
from ccafl.data.synthetic.writing import synthesize

__all__ = [
    "ATTRIBUTE_CHOICES",
    "ATTRIBUTE_COLUMNS",
    "SyntheticSpec",
    "camera_bias_diagnostic",
    "caption_for",
    "sample_identities",
    "synthesize",
    "web_caption",
]
