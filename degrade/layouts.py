"""Layouts of paired (and unpaired) restoration data sets as their authors distribute them.

Each layout finds its LQ/HQ pairs under a root folder and reports every pairing problem
(an LQ without its HQ, an HQ without its LQ, duplicate names) per file instead of
skipping it. Sizes are checked later, when the images are decoded. The folder names
and file-name rules are those of the public releases; each layout's ``source`` says
where the data set comes from. The rules assumed here:

- LOL (Wei et al., BMVC 2018): ``our485|eval15/low/N.png`` with ``.../high/N.png``.
- RESIDE (Li et al., TIP 2019): SOTS outdoor ``hazy/0001_0.8_0.2.jpg`` -> ``gt/0001.png``,
  SOTS indoor ``hazy/1400_1.png`` -> ``gt/1400.png``, ITS ``hazy/1_1_0.90179.png`` ->
  ``clear/1.png``: the clear image's name is the hazy name up to its first underscore.
- Rain1400 (Fu et al., CVPR 2017): ``rainy_image/1_1.jpg`` .. ``1_14.jpg`` -> ``ground_truth/1.jpg``.
- Raindrop (Qian et al., CVPR 2018): ``data/0_rain.png`` -> ``gt/0_clean.png``.
- Snow100K (Liu et al., TIP 2018): ``synthetic/N.jpg`` -> ``gt/N.jpg`` (in every folder that has
  both, e.g. ``test/Snow100K-L``); ``mask/`` is ignored.
- GoPro (Nah et al., CVPR 2017): ``SEQ/blur/N.png`` -> ``SEQ/sharp/N.png`` (``blur_gamma`` ignored).
- RealSR V3 (Cai et al., ICCV 2019): ``Canon|Nikon/Train|Test/<s>/Canon_001_LR<s>.png`` with
  ``Canon_001_HR.png``; LR and HR are registered at the same size.
- DRealSR (Wei et al., ECCV 2020): ``test_LR/X_x4.png`` with ``test_HR/X_x1.png``; HR = scale x LR.
- RealSnow (Zhu et al., CVPR 2023, WGWS-Net): real snowy frames and their snow-free frames from
  background-static videos, ``video2imgs_IN_testing_re/N.png`` -> ``video2imgs_GT_testing_re/N.png``
  (the folders WGWS-Net's ``testing_model_Seting3.py`` reads): in every folder, a sub-folder whose
  name has the word ``IN`` pairs with its sibling named with ``GT`` instead, file by file.
- Unpaired real photos (RealPhoto60, RTTS, any folder): every image, no HQ.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Pair:
    """One LQ image and its HQ (``None`` when the data set has no ground truth), relative to the root."""

    lq: str
    hq: str | None


@dataclass(frozen=True)
class Layout:
    """A data set's layout: its labels, scale (LQ size x scale = HQ size; 1 = same size), and pairing rule."""

    name: str
    labels: tuple[str, ...]
    scale: int
    paired: bool
    description: str
    source: str
    find: Callable[[Path, int], tuple[list[Pair], list[dict]]]


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _match(root: Path, lq_dir: Path, hq_dir: Path,
           hq_stem: Callable[[str], str | None]) -> tuple[list[Pair], list[dict]]:
    """Pair every LQ in ``lq_dir`` with the HQ in ``hq_dir`` whose stem is ``hq_stem(lq stem)``."""
    return _match_lists(root, _images(lq_dir), _images(hq_dir), hq_stem, hq_dir)


def _unique(root: Path, files: list[Path], what: str) -> tuple[dict[str, Path], list[dict]]:
    """Files by stem; a second file with the same stem is a problem, not a silent overwrite."""
    by_stem: dict[str, Path] = {}
    problems = []
    for p in files:
        if p.stem in by_stem:
            problems.append({"path": _rel(p, root), "reason": f"duplicate {what} name: {p.stem!r} also as "
                             f"{_rel(by_stem[p.stem], root)}"})
        else:
            by_stem[p.stem] = p
    return by_stem, problems


def _sub_dirs(root: Path, lq_name: str, hq_name: str) -> list[tuple[Path, Path]]:
    """Every folder under ``root`` (itself included) that has both ``lq_name`` and ``hq_name`` sub-folders."""
    found = []
    for d in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
        if (d / lq_name).is_dir() and (d / hq_name).is_dir():
            found.append((d / lq_name, d / hq_name))
    return found


def _folder_pairs(lq_name: str, hq_name: str, hq_stem: Callable[[str], str | None]):
    def find(root: Path, scale: int) -> tuple[list[Pair], list[dict]]:
        pairs: list[Pair] = []
        problems: list[dict] = []
        dirs = _sub_dirs(root, lq_name, hq_name)
        if not dirs:
            problems.append({"path": ".", "reason": f"no folder with both {lq_name}/ and {hq_name}/ under {root}"})
        for lq_dir, hq_dir in dirs:
            p, q = _match(root, lq_dir, hq_dir, hq_stem)
            pairs += p
            problems += q
        return pairs, problems

    return find


def _same(stem: str) -> str:
    return stem


def _before_underscore(stem: str) -> str | None:
    head = stem.split("_", 1)[0]
    return head if head and "_" in stem else None


def _raindrop(stem: str) -> str | None:
    return stem[: -len("_rain")] + "_clean" if stem.endswith("_rain") else None


def _realsr(root: Path, scale: int) -> tuple[list[Pair], list[dict]]:
    pairs: list[Pair] = []
    problems: list[dict] = []
    pattern = re.compile(rf"^(.+)_LR{scale}$")
    dirs = sorted(d for d in [root, *root.rglob("*")] if d.is_dir() and d.name == str(scale))
    if not dirs:
        problems.append({"path": ".", "reason": f"no folder named {scale}/ (RealSR V3 keeps scale {scale} in "
                         f"Canon|Nikon/Train|Test/{scale}/)"})
    for d in dirs:
        def hq_stem(stem: str) -> str | None:
            m = pattern.match(stem)
            return f"{m.group(1)}_HR" if m else None

        lq_files = [p for p in _images(d) if pattern.match(p.stem)]
        hq_files = [p for p in _images(d) if p.stem.endswith("_HR")]
        other = [p for p in _images(d) if p not in lq_files and p not in hq_files]
        for p in other:
            problems.append({"path": _rel(p, root), "reason": f"neither an HR nor an LR{scale} image"})
        p, q = _match_lists(root, lq_files, hq_files, hq_stem)
        pairs += p
        problems += q
    return pairs, problems


def _match_lists(root: Path, lq_files: list[Path], hq_files: list[Path], hq_stem: Callable[[str], str | None],
                 hq_dir: Path | None = None) -> tuple[list[Pair], list[dict]]:
    """Pair LQ files with HQ files by ``hq_stem``; report duplicates, LQs without HQ and HQs without LQ."""
    hq_by_stem, problems = _unique(root, hq_files, "HQ")
    lq_by_stem, dup = _unique(root, lq_files, "LQ")
    problems += dup
    pairs: list[Pair] = []
    used: set[str] = set()
    for p in lq_by_stem.values():
        stem = hq_stem(p.stem)
        if stem is None:
            problems.append({"path": _rel(p, root), "reason": "LQ file name does not follow the layout's pattern"})
            continue
        hq = hq_by_stem.get(stem)
        if hq is None:
            folder = hq_dir if hq_dir is not None else (hq_files[0].parent if hq_files else None)
            where = _rel(folder, root) + "/" if folder is not None else ""
            problems.append({"path": _rel(p, root), "reason": f"LQ without its HQ (looked for {where}{stem}.*)"})
            continue
        used.add(stem)
        pairs.append(Pair(_rel(p, root), _rel(hq, root)))
    for stem, hq in hq_by_stem.items():
        if stem not in used:
            problems.append({"path": _rel(hq, root), "reason": "HQ without any LQ"})
    return pairs, problems


def _drealsr(root: Path, scale: int) -> tuple[list[Pair], list[dict]]:
    pairs: list[Pair] = []
    problems: list[dict] = []
    dirs = _sub_dirs(root, "test_LR", "test_HR") + _sub_dirs(root, "train_LR", "train_HR")
    if not dirs:
        problems.append({"path": ".", "reason": f"no folder with both test_LR/ and test_HR/ under {root}"})
    suffix = f"_x{scale}"
    for lq_dir, hq_dir in sorted(dirs):
        p, q = _match(root, lq_dir, hq_dir, lambda s: s[: -len(suffix)] + "_x1" if s.endswith(suffix) else None)
        pairs += p
        problems += q
    return pairs, problems


_IN_WORD = re.compile(r"(?<![A-Za-z0-9])IN(?![A-Za-z0-9])")


def _realsnow(root: Path, scale: int) -> tuple[list[Pair], list[dict]]:
    """RealSnow: every ``*_IN_*`` folder with its ``*_GT_*`` sibling, pairs by identical stem."""
    pairs: list[Pair] = []
    problems: list[dict] = []
    dirs = []
    for d in sorted(d for d in root.rglob("*") if d.is_dir() and _IN_WORD.search(d.name)):
        gt = d.with_name(_IN_WORD.sub("GT", d.name))
        if gt.is_dir():
            dirs.append((d, gt))
        else:
            problems.append({"path": _rel(d, root), "reason": f"snowy folder without its ground-truth sibling "
                                                              f"{gt.name}/"})
    if not dirs and not problems:
        problems.append({"path": ".", "reason": f"no snowy/ground-truth folder pair (e.g. video2imgs_IN_testing_re/ "
                                                f"and video2imgs_GT_testing_re/) under {root}"})
    for lq_dir, hq_dir in dirs:
        p, q = _match(root, lq_dir, hq_dir, _same)
        pairs += p
        problems += q
    return pairs, problems


def _unpaired(sub: str | None = None):
    def find(root: Path, scale: int) -> tuple[list[Pair], list[dict]]:
        base = root / sub if sub and (root / sub).is_dir() else root
        files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        problems = [] if files else [{"path": ".", "reason": f"no images under {base}"}]
        return [Pair(_rel(p, root), None) for p in files], problems

    return find


LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in [
    Layout("lol", ("low-light",), 1, True, "LOL low-light pairs (our485 train, eval15 test)",
           "Wei et al., BMVC 2018; https://daooshee.github.io/BMVC2018website/", _folder_pairs("low", "high", _same)),
    Layout("reside-sots-outdoor", ("haze",), 1, True, "RESIDE SOTS outdoor hazy/clear pairs",
           "Li et al., TIP 2019; https://sites.google.com/view/reside-dehaze-datasets",
           _folder_pairs("hazy", "gt", _before_underscore)),
    Layout("reside-sots-indoor", ("haze",), 1, True, "RESIDE SOTS indoor hazy/clear pairs",
           "Li et al., TIP 2019; https://sites.google.com/view/reside-dehaze-datasets",
           _folder_pairs("hazy", "gt", _before_underscore)),
    Layout("reside-its", ("haze",), 1, True, "RESIDE ITS (indoor training set) hazy/clear pairs",
           "Li et al., TIP 2019; https://sites.google.com/view/reside-dehaze-datasets",
           _folder_pairs("hazy", "clear", _before_underscore)),
    Layout("rain1400", ("rain",), 1, True, "Rain1400: 14 rainy versions of each clean image",
           "Fu et al., CVPR 2017; https://xueyangfu.github.io/projects/cvpr2017.html",
           _folder_pairs("rainy_image", "ground_truth", _before_underscore)),
    Layout("raindrop", ("raindrop",), 1, True, "Raindrop: photos through a glass with drops and without",
           "Qian et al., CVPR 2018; https://github.com/rui1996/DeRaindrop", _folder_pairs("data", "gt", _raindrop)),
    Layout("snow100k", ("snow",), 1, True, "Snow100K synthetic snowy/clean pairs",
           "Liu et al., TIP 2018; https://sites.google.com/view/yunfuliu/desnownet",
           _folder_pairs("synthetic", "gt", _same)),
    Layout("gopro", ("blur",), 1, True, "GoPro motion-blurred/sharp frames",
           "Nah et al., CVPR 2017; https://seungjunnah.github.io/Datasets/gopro",
           _folder_pairs("blur", "sharp", _same)),
    Layout("realsr", ("real",), 4, True, "RealSR V3 (Canon and Nikon) LR/HR pairs, registered at the same size",
           "Cai et al., ICCV 2019; https://github.com/csjcai/RealSR", _realsr),
    Layout("drealsr", ("real",), 4, True, "DRealSR LR/HR pairs (HR = scale x LR)",
           "Wei et al., ECCV 2020; https://github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-Image-"
           "Super-Resolution", _drealsr),
    Layout("folder", (), 1, False, "any folder of real photos without ground truth", "your own photos", _unpaired()),
    Layout("realphoto60", ("real",), 1, False, "RealPhoto60: 60 real low-quality photos without ground truth",
           "Yu et al., SUPIR, CVPR 2024; https://github.com/Fanghua-Yu/SUPIR", _unpaired()),
    Layout("rtts", ("haze",), 1, False, "RESIDE RTTS: real hazy photos without ground truth",
           "Li et al., TIP 2019; https://sites.google.com/view/reside-dehaze-datasets", _unpaired("JPEGImages")),
    Layout("realsnow", ("snow",), 1, True,
           "RealSnow: real snowy frames and their snow-free ground truth from background-static videos",
           "Zhu et al., CVPR 2023 (WGWS-Net; Diff-Restorer ref. [61]); https://github.com/zhuyr97/WGWS-Net",
           _realsnow),
]}


def get_layout(name: str) -> Layout:
    """The layout called ``name``, with a "did you mean" on a typo."""
    try:
        return LAYOUTS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, LAYOUTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown layout {name!r}.{hint} Known layouts: {', '.join(LAYOUTS)}") from None
