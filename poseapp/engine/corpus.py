"""A distillation corpus: people from many public photo sources, de-duplicated and labelled by two teachers.

Three resumable stages, each writing under one folder:

1. ``scan_sources``: every person box of every source (``Source``: YOLO or VOC box files, single-person
   crops, photos or video frames whose people a detector finds, or a COCO keypoint file), kept if tall
   enough, then de-duplicated (``dedupe``): Roboflow's augmented copies of one photo by their shared source
   name, then near-identical people across all sources by a perceptual hash of the person's crop and of its
   mirror image. Writes ``people.jsonl``.
2. ``label_corpus``: both teachers top-down on each person (``label.fuse_teachers`` turns their two answers
   into positions and per-joint weights); appends to ``labels-<shard>.jsonl``, so a stopped run goes on
   where it stopped and several shards can run side by side.
3. ``export_corpus``: one COCO keypoint file per source on the unified skeleton (``<source>.json``, with
   ``keypoint_scores`` = the fused weights), and ``manifest.json`` with the counts and origins.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data import load_people, read_bgr
from ..geometry import keypoint_similarity
from ..skeleton import INDEX, NUM_JOINTS
from .label import (
    IMAGE_SUFFIXES,
    JOINT_AGREEMENT,
    fuse_teachers,
    keypoint_annotation,
    teacher_visibility,
    unified_category,
)

SOURCE_KINDS = ("yolo", "voc", "crops", "photos", "video", "coco")
"""``yolo``: ``*/images`` + ``*/labels`` (normalised ``class cx cy w h``; the person classes are the
source's ``classes``, 0 unless said, ``NAME=yolo[1,2]:PATH``); ``voc``:
``JPEGImages/`` + ``Annotations/`` (Pascal VOC xml); ``crops``: folders of one-person crops (the box is the
image); ``photos``: images whose people the detector finds; ``video``: video files, every ``video_every``-th
frame saved as a JPEG and its people found by the detector; ``coco``: a COCO keypoint file with person
boxes and human labels (kept where they follow COCO's conventions, the teachers' answer added where it agrees
with them: ``_with_human_labels``)."""

OWN_CONVENTION = np.array([INDEX["left_hip"], INDEX["right_hip"]])
"""Joints whose human labels in the ``coco`` sources follow another convention than COCO's: LSP(ET) labels
hips higher than COCO does, so there the teachers' hips are used."""

HASH_BITS = 64
DUPLICATE_BITS = 5
"""Two people whose crop hashes differ in at most this many bits are the same photo of the same person."""
_CHUNKS = DUPLICATE_BITS + 1  # pigeonhole: within DUPLICATE_BITS, at least one chunk is identical


@dataclass(frozen=True)
class Source:
    """One place people come from; ``origin`` names it in model cards (``owner/repo @ commit``)."""

    name: str
    kind: str
    path: str
    images: str = ""
    """``coco`` only: the image folder of the annotation file ``path``."""
    origin: str = ""
    classes: tuple[int, ...] = (0,)
    """``yolo`` only: the label classes that are people (a detection export names them in its data.yaml)."""

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(
                f"source {self.name}: unknown kind {self.kind!r}; known: {', '.join(SOURCE_KINDS)}"
            )
        if self.classes != (0,) and self.kind != "yolo":
            raise ValueError(f"source {self.name}: person classes are for yolo sources, not {self.kind}")
        if not Path(self.path).exists():
            raise FileNotFoundError(f"source {self.name}: {self.path} does not exist")

    @property
    def image_root(self) -> Path:
        """The folder the people's ``file`` names are relative to."""
        if self.kind == "coco":
            return Path(self.images)
        return Path(self.path)


_KIND = re.compile(r"(\w+)(?:\[(\d+(?:,\d+)*)\])?")
"""A source's KIND, with a yolo source's person classes: ``yolo``, ``yolo[5]``, ``yolo[1,2,3]``."""


def parse_source(text: str) -> Source:
    """``NAME=KIND:PATH[:IMAGES][@ORIGIN]`` (``IMAGES`` only for ``coco``) as a ``Source``; a ``yolo``
    kind may name its person classes, ``yolo[1,2,3]`` (default ``yolo``: class 0)."""
    spec, _, origin = text.partition("@")
    name, eq, rest = spec.partition("=")
    kind, colon, paths = rest.partition(":")
    if not (eq and colon and name and paths):
        raise ValueError(f"--source {text!r}: expected NAME=KIND:PATH[:IMAGES][@ORIGIN]")
    path, _, images = paths.partition(":")
    if kind == "coco" and not images:
        raise ValueError(f"--source {text!r}: a coco source needs its image folder (NAME=coco:ANN:IMAGES)")
    match = _KIND.fullmatch(kind.strip())
    if match is None:
        raise ValueError(f"--source {text!r}: KIND is a word, or yolo[CLASSES] such as yolo[1,2,3]")
    kind_name, classes = match.groups()
    people = tuple(int(c) for c in classes.split(",")) if classes else (0,)
    return Source(name.strip(), kind_name, path, images, origin.strip(), people)


def write_sources(out_dir: Path, sources: list[Source]) -> None:
    with open(out_dir / "sources.json", "w", encoding="utf-8") as f:
        json.dump([asdict(s) for s in sources], f, indent=1)


def read_sources(out_dir: Path) -> list[Source]:
    """The sources a corpus was scanned from (``sources.json``)."""
    path = out_dir / "sources.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give the corpus's --source options")
    with open(path, encoding="utf-8") as f:
        return [Source(**{**s, "classes": tuple(s.get("classes", (0,)))}) for s in json.load(f)]


@dataclass
class Candidate:
    """A person box found by ``scan_sources``; ``human`` holds a ``coco`` source's labels (unified xy, v)."""

    id: int
    source: str
    file: str
    box: list[float]
    hash: int = 0
    mirror_hash: int = 0
    group: str = ""
    """Photos with the same group are copies of one original (Roboflow's augmented versions)."""
    human: list[float] = field(default_factory=list)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def roboflow_group(file_name: str) -> str:
    """The original photo behind a Roboflow export name (``photo_jpg.rf.<hash>.jpg`` -> ``photo_jpg``)."""
    stem = Path(file_name).name
    return stem.split(".rf.")[0] if ".rf." in stem else stem


def _yolo_boxes(root: Path, classes: tuple[int, ...]) -> Iterator[tuple[str, np.ndarray, list[list[float]]]]:
    people = {str(c) for c in classes}
    for image_path in _images_under(root):
        label = image_path.parent.parent / "labels" / (image_path.stem + ".txt")
        if image_path.parent.name != "images" or not label.is_file():
            continue
        image = read_bgr(str(image_path))
        height, width = image.shape[:2]
        boxes = []
        for line in label.read_text().splitlines():
            values = line.split()
            if len(values) == 5 and values[0] in people:
                cx, cy, w, h = (float(v) for v in values[1:])
                boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height])
        yield str(image_path.relative_to(root)), image, boxes


def _voc_boxes(root: Path) -> Iterator[tuple[str, np.ndarray, list[list[float]]]]:
    for xml in sorted((root / "Annotations").rglob("*.xml")):
        tree = ET.parse(xml).getroot()
        folder, name = tree.findtext("folder") or "", tree.findtext("filename") or ""
        image = root / "JPEGImages" / folder / name
        if not image.is_file():
            continue
        boxes = []
        for obj in tree.iter("object"):
            if obj.findtext("name") != "person":
                continue
            b = obj.find("bndbox")
            x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x0, y0, x1 - x0, y1 - y0])
        yield str(image.relative_to(root)), read_bgr(str(image)), boxes


def _crop_boxes(root: Path) -> Iterator[tuple[str, np.ndarray, list[list[float]]]]:
    for path in _images_under(root):
        image = read_bgr(str(path))
        height, width = image.shape[:2]
        yield str(path.relative_to(root)), image, [[0.0, 0.0, float(width), float(height)]]


def _detected_boxes(
    images: Iterable[tuple[str, np.ndarray]], detector, min_box_score: float
) -> Iterator[tuple[str, np.ndarray, list[list[float]]]]:
    for name, image in images:
        found = detector.detect_people(image)
        keep = found.box_scores >= min_box_score
        xyxy = found.boxes[keep]
        yield name, image, [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in xyxy.tolist()]


def _video_frames(root: Path, frames_dir: Path, every: int) -> Iterator[tuple[str, np.ndarray]]:
    """Every ``every``-th frame of each video under ``root`` (or the one file ``root``), written as JPEG."""
    videos = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file())
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            continue
        out = frames_dir / video.stem
        out.mkdir(parents=True, exist_ok=True)
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % every == 0:
                    path = out / f"{index:06d}.jpg"
                    if not path.exists():
                        cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                    yield str(path.relative_to(frames_dir)), frame
                index += 1
        finally:
            capture.release()


def crop_hash(image: np.ndarray, box_xywh: Iterable[float]) -> tuple[int, int]:
    """Difference hashes (64 bits) of the person's crop and of its mirror image: each bit says whether a
    pixel of the 9x8 grey thumbnail is brighter than its right neighbour."""
    x, y, w, h = box_xywh
    height, width = image.shape[:2]
    x0, y0 = int(max(0, np.floor(x))), int(max(0, np.floor(y)))
    x1, y1 = int(min(width, np.ceil(x + w))), int(min(height, np.ceil(y + h)))
    crop = image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    thumb = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    hashes = []
    for view in (thumb, thumb[:, ::-1]):
        bits = (view[:, 1:] > view[:, :-1]).ravel()
        hashes.append(int(np.packbits(bits).view(">u8")[0]))
    return hashes[0], hashes[1]


def _hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def dedupe(candidates: list[Candidate]) -> tuple[list[Candidate], Counter]:
    """The candidates without copies, in order, and how many each source lost.

    A photo whose ``group`` was seen before in the same source (another augmented version of it) is
    dropped whole; then a person whose crop hash, or mirrored crop hash, is within ``DUPLICATE_BITS`` of
    an earlier person's is dropped. Near neighbours are found by multi-index hashing: the 64 bits in
    ``DUPLICATE_BITS + 1`` chunks, candidates sharing any chunk exactly compared in full.
    """
    first_file: dict[tuple[str, str], str] = {}
    chunk_bits = -(-HASH_BITS // _CHUNKS)
    mask = (1 << chunk_bits) - 1
    index: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(_CHUNKS)]
    kept: list[Candidate] = []
    dropped: Counter = Counter()
    for candidate in candidates:
        key = (candidate.source, candidate.group or candidate.file)
        if first_file.setdefault(key, candidate.file) != candidate.file:
            dropped[candidate.source] += 1
            continue
        near = False
        for value in (candidate.hash, candidate.mirror_hash):
            for c in range(_CHUNKS):
                for other in index[c].get((value >> (c * chunk_bits)) & mask, ()):
                    if _hamming(kept[other].hash, value) <= DUPLICATE_BITS:
                        near = True
                        break
                if near:
                    break
            if near:
                break
        if near:
            dropped[candidate.source] += 1
            continue
        for c in range(_CHUNKS):
            index[c][(candidate.hash >> (c * chunk_bits)) & mask].append(len(kept))
        kept.append(candidate)
    return kept, dropped


def _boxes_of(source: Source, out_dir: Path, detector, min_box_score: float, video_every: int):
    root = Path(source.path)
    if source.kind == "yolo":
        return _yolo_boxes(root, source.classes)
    if source.kind == "voc":
        return _voc_boxes(root)
    if source.kind == "crops":
        return _crop_boxes(root)
    if source.kind == "photos":
        photos = ((str(p.relative_to(root)), read_bgr(str(p))) for p in _images_under(root))
        return _detected_boxes(photos, detector, min_box_score)
    if source.kind == "video":
        frames = _video_frames(root, out_dir / "frames" / source.name, video_every)
        return _detected_boxes(frames, detector, min_box_score)
    raise ValueError(source.kind)


def frames_root(source: Source, out_dir: Path) -> Path:
    """The folder a source's image names are relative to (a video source's frames live in the corpus)."""
    return out_dir / "frames" / source.name if source.kind == "video" else source.image_root


def scan_sources(
    sources: list[Source],
    out_dir: Path,
    detector=None,
    min_height: float = 48.0,
    min_box_score: float = 0.5,
    video_every: int = 1,
) -> tuple[list[Candidate], Counter, Counter]:
    """Every person box of ``sources`` at least ``min_height`` pixels tall (and 4 wide), de-duplicated
    against each other and against the people ``out_dir/people.jsonl`` already holds; the new people are
    appended to it with the next ids, so a corpus grows by scanning more sources into it. Returns the new
    people, the boxes found and the copies dropped per source. ``detector`` (a ``YoloPoseTeacher``) finds
    the people of ``photos`` and ``video`` sources."""
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = read_candidates(out_dir) if (out_dir / "people.jsonl").is_file() else []
    candidates: list[Candidate] = []
    found: Counter = Counter()
    for source in sources:
        if source.kind == "coco":
            boxes = _coco_candidates(source)
            found[source.name] += len(boxes)
            candidates.extend(boxes)
            continue
        if source.kind in ("photos", "video") and detector is None:
            raise ValueError(f"source {source.name}: a {source.kind} source needs a detector")
        for file, image, boxes in tqdm(_boxes_of(source, out_dir, detector, min_box_score, video_every),
                                desc=f"scan {source.name}", mininterval=10):  # fmt: skip
            tall = [b for b in boxes if b[3] >= min_height and b[2] >= 4]
            found[source.name] += len(tall)
            for box in tall:
                h, m = crop_hash(image, box)
                group = roboflow_group(file) if source.kind == "yolo" else ""
                candidates.append(Candidate(-1, source.name, file, box, h, m, group))
    kept, dropped = dedupe(existing + candidates)
    new = kept[len(existing) :]  # the people kept before stay kept: they come first and are distinct
    first_id = max((c.id for c in existing), default=-1) + 1
    with open(out_dir / "people.jsonl", "a", encoding="utf-8") as f:
        for i, candidate in enumerate(new):
            candidate.id = first_id + i
            f.write(json.dumps(asdict(candidate)) + "\n")
    return new, found, dropped


def _coco_candidates(source: Source) -> list[Candidate]:
    """A COCO source's people (human boxes) with their human labels."""
    people = load_people(source.path, source.images)
    root = Path(source.images)
    out = []
    for person in people:
        human = np.column_stack([person.xy, person.visibility]).ravel().round(2).tolist()
        image = read_bgr(person.image_path)
        h, m = crop_hash(image, person.box_xywh)
        file = str(Path(person.image_path).relative_to(root))
        out.append(Candidate(-1, source.name, file, person.box_xywh.tolist(), h, m, "", human))
    return out


def read_candidates(out_dir: Path) -> list[Candidate]:
    with open(out_dir / "people.jsonl", encoding="utf-8") as f:
        return [Candidate(**json.loads(line)) for line in f if line.strip()]


def _done_ids(out_dir: Path) -> set[int]:
    done = set()
    for path in out_dir.glob("labels-*.jsonl"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    done.add(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut short by a stop; it is labelled again
    return done


def label_corpus(
    out_dir: Path, sources: list[Source], primary, secondary, shard: int = 0, shards: int = 1
) -> int:
    """Label the people of shard ``shard`` of ``shards`` not labelled yet, with both teachers, appending
    one JSON line per person to ``labels-<shard>.jsonl``; returns how many were labelled now."""
    roots = {s.name: frames_root(s, out_dir) for s in sources}
    todo = [c for c in read_candidates(out_dir) if c.id % shards == shard]
    done = _done_ids(out_dir)
    todo = [c for c in todo if c.id not in done]
    by_image: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for candidate in todo:
        by_image[(candidate.source, candidate.file)].append(candidate)
    labelled = 0
    path = out_dir / f"labels-{shard}.jsonl"
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with open(path, "a", encoding="utf-8") as out:  # a line cut short by a stop stays on its own
            out.write("\n")
    with (
        open(path, "a", encoding="utf-8") as out,
        tqdm(total=len(todo), desc=f"label shard {shard}/{shards}", mininterval=10) as bar,
    ):
        for (source, file), people in by_image.items():
            image = read_bgr(str(roots[source] / file))
            boxes = np.array([c.box for c in people], dtype=np.float64)
            first, second = primary.predict(image, boxes), secondary.predict(image, boxes)
            for i, candidate in enumerate(people):
                out.write(json.dumps({
                    "id": candidate.id,
                    "xy": [first.xy[i].round(2).tolist(), second.xy[i].round(2).tolist()],
                    "scores": [first.scores[i].round(4).tolist(), second.scores[i].round(4).tolist()],
                }) + "\n")  # fmt: skip
            out.flush()
            labelled += len(people)
            bar.update(len(people))
    return labelled


def _with_human_labels(
    human: np.ndarray, xy: np.ndarray, visibility: np.ndarray, weight: np.ndarray, box: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A person's label where a ``coco`` source has human labels (``human``: unified ``x, y, v`` flat).

    Human positions are kept for every joint they label that follows COCO's conventions, with weight 1:
    all but ``OWN_CONVENTION`` (LSP places hips higher than COCO). The teachers' joints (hips, face) are
    added only where the teachers' skeleton agrees with the human one on the joints both have (mean
    keypoint similarity at least ``label.JOINT_AGREEMENT``), so a pose both teachers misread (an acrobat
    upside down) keeps its human joints and nothing else."""
    human = human.reshape(NUM_JOINTS, 3)
    labelled = human[:, 2] > 0
    kept = labelled & ~np.isin(np.arange(NUM_JOINTS), OWN_CONVENTION)
    shared = kept & (visibility > 0)
    similarity = keypoint_similarity(xy, human[:, :2], max(float(box[2] * box[3]), 1.0))
    xy, visibility, weight = xy.copy(), visibility.copy(), weight.copy()
    if not shared.any() or similarity[shared].mean() < JOINT_AGREEMENT:
        visibility[:], weight[:] = 0.0, 0.0
    xy[kept], visibility[kept], weight[kept] = human[kept, :2], 2.0, 1.0
    return xy, visibility, weight


def export_corpus(out_dir: Path, sources: list[Source], min_confidence: float, min_joints: int = 4) -> dict:
    """Write ``<source>.json`` per source and ``manifest.json``; returns the manifest. A person is kept
    with at least ``min_joints`` joints whose fused weight reaches ``min_confidence``."""
    labels: dict[int, dict] = {}
    for path in sorted(out_dir.glob("labels-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                labels[record["id"]] = record
    per_source: dict[str, dict] = {s.name: {"images": {}, "annotations": []} for s in sources}
    for candidate in read_candidates(out_dir):
        record = labels.get(candidate.id)
        if record is None or candidate.source not in per_source:
            continue
        box = np.asarray(candidate.box)
        xy, weight = fuse_teachers(
            np.asarray(record["xy"][0]), np.asarray(record["scores"][0]),
            np.asarray(record["xy"][1]), np.asarray(record["scores"][1]), box[2] * box[3],
        )  # fmt: skip
        visibility = teacher_visibility(weight, min_confidence)
        if candidate.human:
            xy, visibility, weight = _with_human_labels(
                np.asarray(candidate.human), xy, visibility, weight, box
            )
        if np.count_nonzero(visibility) < min_joints:
            continue
        data = per_source[candidate.source]
        image_id = data["images"].setdefault(candidate.file, len(data["images"]) + 1)
        data["annotations"].append(
            keypoint_annotation(candidate.id + 1, image_id, box, xy, visibility, weight)
        )
    manifest = {"sources": [], "people": 0}
    for source in sources:
        data = per_source[source.name]
        coco = {
            "info": {"description": f"PoseApp corpus: {source.name}", "origin": source.origin,
                     "labels": "yolo11n-pose top-down and MoveNet Thunder fused by label.fuse_teachers; "
                               "keypoint_scores = the weights"},
            "images": [{"id": i, "file_name": name} for name, i in data["images"].items()],
            "annotations": data["annotations"],
            "categories": [unified_category()],
        }  # fmt: skip
        ann = out_dir / f"{source.name}.json"
        with open(ann, "w", encoding="utf-8") as f:
            json.dump(coco, f)
        entry = {"name": source.name, "kind": source.kind, "origin": source.origin, "annotations": str(ann),
                 "images": str(frames_root(source, out_dir)), "people": len(data["annotations"]),
                 "photos": len(data["images"])}  # fmt: skip
        manifest["sources"].append(entry)
        manifest["people"] += entry["people"]
    with open(out_dir / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest
