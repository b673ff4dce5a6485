"""A small OCR harness: how well a PP-OCR model (original, locked or restored) still works.

It measures, on text rendered here with Pillow (no dataset, no rapidocr import):

* rec - character error rate of the greedy CTC transcription against the rendered
  ground truth and against a reference model's transcription;
* det - Pearson correlation and mean absolute difference of the text-probability map
  against a reference model's map, plus its peak;
* cls - top-1 agreement of the 0/180-degree classifier with a reference model (and its
  accuracy on lines shown upright and upside down).

Only the model files of the ``rapidocr_onnxruntime`` package are used; the
preprocessing mirrors its ``ch_ppocr_*`` modules (rapidocr 1.4.x, config.yaml).
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import math
import os
import pathlib
import string

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

from onnxlock.evaluate.damage import pearson, top1_agreement

__all__ = [
    "ocr_model_paths", "find_font", "render_text_lines", "render_page",
    "det_input", "rec_input", "cls_input", "rec_charset", "ctc_decode",
    "edit_distance", "character_error_rate", "map_correlation", "top1_agreement",
    "eval_rec", "eval_det", "eval_cls",
]

PACKAGE = "rapidocr_onnxruntime"
MODEL_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
# ASCII letters and digits minus glyphs DejaVuSans draws (nearly) alike: 0/O, 1/l/I.
ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")

LINE_HEIGHT = 48      # rendered line height = the rec model's input height
LINE_FONT_SIZE = 32
PAGE_SIZE = 320

DET_MEAN = (0.485, 0.456, 0.406)   # PaddleOCR's DB detector (ImageNet statistics)
DET_STD = (0.229, 0.224, 0.225)
DET_MULTIPLE = 32
REC_SHAPE = (3, 48, 320)           # config.yaml Rec.rec_img_shape
CLS_SHAPE = (3, 48, 192)           # config.yaml Cls.cls_image_shape
BLANK = "blank"                    # CTC blank label prepended by PP-OCR's CTCLabelDecode

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
)


# --- models -------------------------------------------------------------------------


def ocr_model_paths() -> dict[str, pathlib.Path]:
    """Paths of rapidocr's det/rec/cls ONNX files, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{PACKAGE} is not installed (pip install rapidocr-onnxruntime)")
    for folder in spec.submodule_search_locations:
        paths = {kind: pathlib.Path(folder, "models", name) for kind, name in MODEL_FILES.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    raise FileNotFoundError(f"{PACKAGE} has no models/ folder with {sorted(MODEL_FILES.values())}")


def rec_charset(model_path: str | os.PathLike) -> list[str]:
    """The rec model's CTC classes: blank, the dictionary from its ``character`` metadata, space."""
    model = onnx.load(os.fspath(model_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise KeyError(f"{model_path} has no 'character' metadata")
    return [BLANK, *meta["character"].splitlines(), " "]


# --- rendering ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def find_font() -> str | None:
    """Path of a DejaVuSans TrueType font on this machine, or None."""
    candidates = list(FONT_CANDIDATES)
    mpl = importlib.util.find_spec("matplotlib")
    if mpl is not None and mpl.submodule_search_locations:
        candidates += [os.path.join(d, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
                       for d in mpl.submodule_search_locations]
    candidates += sorted(glob.glob("/usr/share/fonts/**/DejaVuSans.ttf", recursive=True))
    return next((p for p in candidates if os.path.isfile(p)), None)


def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVuSans at ``size`` px, else Pillow's scalable default font."""
    path = find_font()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def random_word(rng: np.random.Generator) -> str:
    """5-12 random characters of ``ALPHABET``."""
    return "".join(rng.choice(list(ALPHABET), size=int(rng.integers(5, 13))))


def random_colors(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A dark-ish ink and a light background, each slightly tinted."""
    ink = tuple(int(v) for v in rng.integers(0, 60, size=3))
    paper = tuple(int(v) for v in rng.integers(205, 256, size=3))
    return ink, paper


def render_text_lines(n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``n`` (text, RGB uint8 image of height 48) pairs: one random word per line, ~32 px glyphs."""
    rng = np.random.default_rng(seed)
    font = load_font(LINE_FONT_SIZE)
    lines = []
    for _ in range(n):
        text = random_word(rng)
        ink, paper = random_colors(rng)
        left, top, right, bottom = font.getbbox(text)
        margin = int(rng.integers(4, 13))
        image = Image.new("RGB", (right - left + 2 * margin, LINE_HEIGHT), paper)
        dy = (LINE_HEIGHT - (bottom - top)) // 2 + int(rng.integers(-2, 3))
        ImageDraw.Draw(image).text((margin - left, dy - top), text, font=font, fill=ink)
        lines.append((text, np.asarray(image)))
    return lines


def render_page(seed: int = 0, size: int = PAGE_SIZE, n_lines: int = 5) -> np.ndarray:
    """A ``size`` x ``size`` RGB page with ``n_lines`` words at random offsets in separate bands."""
    rng = np.random.default_rng(seed)
    ink, paper = random_colors(rng)
    image = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(image)
    band = size // n_lines
    for row in range(n_lines):
        font = load_font(int(rng.integers(20, 29)))
        text = random_word(rng)
        left, top, right, bottom = font.getbbox(text)
        x = int(rng.integers(8, max(9, size - (right - left) - 8)))
        y = row * band + int(rng.integers(2, max(3, band - (bottom - top) - 2)))
        draw.text((x - left, y - top), text, font=font, fill=ink)
    return np.asarray(image)


# --- preprocessing ------------------------------------------------------------------


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image to float32 (no-op copy when already that size)."""
    if img.shape[:2] != (height, width):
        img = np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))
    return img.astype(np.float32)


def det_input(img: np.ndarray) -> np.ndarray:
    """1x3xHxW detector input: sides rounded to multiples of 32, ImageNet-normalised x/255."""
    h, w = img.shape[:2]
    side = lambda v: max(DET_MULTIPLE, int(round(v / DET_MULTIPLE)) * DET_MULTIPLE)  # noqa: E731
    x = resize(img, side(w), side(h)) / 255.0
    x = (x - np.array(DET_MEAN, np.float32)) / np.array(DET_STD, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def line_batch(imgs: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Nx3xHxW batch of text lines: aspect-kept resize to ``height`` (at most ``width`` wide),
    (x/255-0.5)/0.5, zero-padded on the right, as PP-OCR's rec/cls ``resize_norm_img``."""
    batch = np.zeros((len(imgs), 3, height, width), np.float32)
    for i, img in enumerate(imgs):
        h, w = img.shape[:2]
        resized_w = min(width, int(math.ceil(height * w / h)))
        x = resize(img, resized_w, height) / 255.0
        batch[i, :, :, :resized_w] = ((x - 0.5) / 0.5).transpose(2, 0, 1)
    return batch


def rec_input(imgs: list[np.ndarray]) -> np.ndarray:
    """Recogniser batch: height 48, padded to 320 wide (or wider for very long lines, as PP-OCR)."""
    _, height, width = REC_SHAPE
    widest = max((img.shape[1] / img.shape[0] for img in imgs), default=0.0)
    return line_batch(imgs, height, max(width, int(height * widest)))


def cls_input(imgs: list[np.ndarray]) -> np.ndarray:
    """Orientation-classifier batch: 48x192, same normalisation as rec."""
    _, height, width = CLS_SHAPE
    return line_batch(imgs, height, width)


# --- decoding and metrics -----------------------------------------------------------


def ctc_decode(probs: np.ndarray, charset: list[str]) -> list[str]:
    """Greedy CTC over NxTxC class scores: arg-max, merge repeats, drop blanks (class 0)."""
    best = np.asarray(probs).argmax(axis=-1)
    texts = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        texts.append("".join(charset[i] for i in row[keep]))
    return texts


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two strings."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def character_error_rate(hyps: list[str], refs: list[str]) -> float:
    """Total edit distance over total reference characters (0 = perfect; can exceed 1)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    total = sum(len(r) for r in refs)
    edits = sum(edit_distance(h, r) for h, r in zip(hyps, refs))
    return edits / total if total else float(edits > 0)


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two detection maps, flattened; 0.0 if either is constant."""
    return pearson(a, b)


# --- evaluation ---------------------------------------------------------------------


def infer(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    """The session's first output for ``batch`` fed to its first input."""
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def transcribe(session: ort.InferenceSession, batch: np.ndarray, charset: list[str]) -> list[str]:
    """Greedy transcriptions of a rec batch, stripped of the stray spaces PP-OCR adds at margins."""
    return [text.strip() for text in ctc_decode(infer(session, batch), charset)]


def eval_rec(session: ort.InferenceSession, reference_session: ort.InferenceSession,
             charset: list[str], lines: list[tuple[str, np.ndarray]]) -> dict:
    """CER of ``session``'s transcriptions vs the rendered text and vs the reference's."""
    truth = [text for text, _ in lines]
    batch = rec_input([img for _, img in lines])
    hyps = transcribe(session, batch, charset)
    refs = transcribe(reference_session, batch, charset)
    return {"cer_truth": character_error_rate(hyps, truth),
            "cer_reference": character_error_rate(hyps, refs),
            "reference_cer_truth": character_error_rate(refs, truth),
            "exact_match": float(np.mean([h == t for h, t in zip(hyps, truth)])),
            "texts": hyps}


def eval_det(session: ort.InferenceSession, reference_session: ort.InferenceSession,
             page: np.ndarray) -> dict:
    """Agreement of ``session``'s text-probability map with the reference's on ``page``."""
    batch = det_input(page)
    out, ref = infer(session, batch), infer(reference_session, batch)
    finite = bool(np.isfinite(out).all())
    return {"map_correlation": map_correlation(out, ref),
            "mean_abs_diff": float(np.abs(out - ref).mean()) if finite else float("inf"),
            "max_prob": float(out.max()) if finite else float("nan"),
            "reference_max_prob": float(ref.max())}


def eval_cls(session: ort.InferenceSession, reference_session: ort.InferenceSession,
             lines: list[tuple[str, np.ndarray]]) -> dict:
    """Top-1 agreement (and accuracy) of the 0/180 classifier on the lines upright and flipped."""
    upright = [img for _, img in lines]
    imgs = upright + [np.ascontiguousarray(img[::-1, ::-1]) for img in upright]
    truth = np.repeat([0, 1], len(upright))
    batch = cls_input(imgs)
    out, ref = infer(session, batch), infer(reference_session, batch)
    return {"top1_agreement": top1_agreement(out, ref),
            "accuracy": float(np.mean(out.argmax(-1) == truth)),
            "reference_accuracy": float(np.mean(ref.argmax(-1) == truth))}
