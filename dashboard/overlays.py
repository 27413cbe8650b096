"""Server-side rendering of patches (JPEG), saliency overlays and colour legends (PNG).

An overlay is an RGBA image drawn over the raw patch by the browser; the user's opacity is
CSS (changing it loads nothing). Its pixels depend on:

- ``sign``: which values are shown: ``abs`` |v|, ``pos`` max(v, 0), ``neg`` max(−v, 0),
  or ``signed`` v on a diverging scale (−s..+s with 0 in the middle of the colour map);
- ``norm`` and ``clip``: the scale s is the ``clip``-th percentile of the shown values of
  this map (``image``) or of up to ``SCALE_SAMPLE`` maps of the variant (``dataset``);
  values beyond s take the end colour. Per-image maxima are 7–13x the median for
  SmoothGrad, so the p99 default keeps maps legible where max scaling shows a few dots;
- ``follow``: the overlay's own alpha is the normalised magnitude (Captum's
  ``alpha_scaling``), so tissue without attribution stays visible under it.

Maps are read through :func:`read_maps` (``SaliencyStore.read``). Images are rendered as
*sheets*: the tiles of a grid page stacked top to bottom in one image (see
:mod:`histoxai.dashboard.routes`), so a page turn asks for two images, not 96. Recent sheets
are kept in an LRU cache keyed by everything that changes the pixels, and the next page's
sheets are rendered into it in the background while the user looks at this one.
"""

from __future__ import annotations

import io
import threading
import zlib
from collections import OrderedDict
from functools import _CacheInfo, cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from histoxai.dashboard.catalog import Catalog
from histoxai.dashboard.state import CLIPS, CMAPS, NORMS, SIGNS
from histoxai.explain.thumbnails import THUMB_PX, served_size, shown, shrink

SCALE_SAMPLE = 512
"""Maps read to estimate a variant-wide scale (evenly spaced over the store)."""
MAX_PX = THUMB_PX
"""Overlays and patches are served at most this many pixels wide (the largest tile)."""
JPEG_QUALITY = 90
"""Patches are served as JPEG at this quality (4:2:0 chroma: half the encoding time of 4:4:4
at quality 95 on a 48-tile sheet of 180 px patches, 8 ms against 15)."""


def read_maps(store, target: str, variant: str, rows) -> np.ndarray:
    """(n, H, W) float32 maps of ``rows`` (positions in the store's patch-id order), in real
    units: through ``SaliencyStore.read``, the one way to read maps."""
    return np.asarray(store.read(target, variant, np.asarray(rows)), dtype=np.float32)


@cache
def colour_table(cmap: str) -> np.ndarray:
    """(256, 3) uint8 colours of matplotlib colour map ``cmap``."""
    if cmap not in CMAPS:
        raise KeyError(f"unknown colour map {cmap!r}; expected one of {CMAPS}")
    from matplotlib import colormaps  # imported once, on first use

    return (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def shown_values(raw: np.ndarray, sign: str) -> np.ndarray:
    """The non-negative magnitudes ``sign`` shows (for the scale); NaN stays NaN."""
    v = np.asarray(raw, dtype=np.float32)
    if sign == "pos":
        return np.maximum(v, 0.0)
    if sign == "neg":
        return np.maximum(-v, 0.0)
    if sign in ("abs", "signed"):
        return np.abs(v)
    raise KeyError(f"unknown sign {sign!r}; expected one of {tuple(SIGNS)}")


def clip_scale(values: np.ndarray, clip: float) -> float:
    """The ``clip``-th percentile of ``values`` (the maximum at 100); 0 for no values."""
    v = np.asarray(values, dtype=np.float32).ravel()
    v = v[np.isfinite(v)] if not np.isfinite(v).all() else v
    if not v.size:
        return 0.0
    if clip >= 100:
        return float(v.max())
    # np.percentile's linear rule from two order statistics (np.partition), without its
    # general machinery: a third of a cold overlay's time went there.
    pos = clip / 100.0 * (v.size - 1)
    lo = int(pos)
    hi = min(lo + 1, v.size - 1)
    part = np.partition(v, (lo, hi))
    return float(part[lo]) + (float(part[hi]) - float(part[lo])) * (pos - lo)


def to_unit(raw: np.ndarray, sign: str, scale: float) -> np.ndarray:
    """Map values in [0, 1] for the colour table: v/s clipped (``signed``: (v/s + 1)/2)."""
    v = np.nan_to_num(np.asarray(raw, dtype=np.float32))
    if scale <= 0:
        return np.full(v.shape, 0.5 if sign == "signed" else 0.0, dtype=np.float32)
    if sign == "signed":
        return np.clip(v / scale, -1.0, 1.0) * 0.5 + 0.5
    return np.clip(shown_values(v, sign) / scale, 0.0, 1.0)


def rgba(unit: np.ndarray, lut: np.ndarray, sign: str, follow: bool) -> np.ndarray:
    """(H, W, 4) uint8 overlay: colours of ``unit``, alpha |normalised value| when ``follow``."""
    idx = (unit * 255.0 + 0.5).astype(np.uint8)
    out = np.empty((*unit.shape, 4), dtype=np.uint8)
    out[..., :3] = lut[idx]
    out[..., 3] = np.frombuffer(alpha_table(sign, follow), dtype=np.uint8)[idx]
    return out


def resize_nearest(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array (maps coarser than their patch)."""
    rows = (np.arange(shape[0]) * x.shape[0]) // shape[0]
    cols = (np.arange(shape[1]) * x.shape[1]) // shape[1]
    return x[np.ix_(rows, cols)]


@cache
def alpha_table(sign: str, follow: bool) -> bytes:
    """Opacity of each of the 256 colour indices (the PNG's tRNS chunk)."""
    i = np.arange(256, dtype=np.float32) / 255.0
    a = (np.abs(i * 2.0 - 1.0) if sign == "signed" else i) if follow else np.ones(256, np.float32)
    return (a * 255.0 + 0.5).astype(np.uint8).tobytes()


def encode_overlay(unit: np.ndarray, cmap: str, sign: str, follow: bool) -> bytes:
    """Palette PNG of ``unit`` (H, W) in [0, 1]: one byte per pixel indexing the colour map,
    with a per-index opacity; the same pixels as :func:`rgba` at a quarter of the bytes
    to compress (about 4x faster to encode)."""
    idx = (unit * 255.0 + 0.5).astype(np.uint8)
    img = Image.frombytes("P", idx.shape[::-1], idx.tobytes())
    img.putpalette(colour_table(cmap).ravel().tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1, transparency=alpha_table(sign, follow))
    return buf.getvalue()


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG of an RGB image at ``JPEG_QUALITY``: patches for display (the stores keep the
    exact pixels), about 8x faster to encode than PNG and a sixth of its bytes."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    """PNG of an (H, W, 3|4) uint8 image; fastest zlib level and run-length strategy
    (about 1.5x faster than the default strategy for a few percent more bytes)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buf.getvalue()


def colour_bar(cmap: str, width: int = 256, height: int = 12) -> np.ndarray:
    """(height, width, 3) uint8 horizontal colour bar, low values on the left."""
    lut = colour_table(cmap)
    idx = (np.arange(width) * 255) // max(width - 1, 1)
    return np.ascontiguousarray(np.broadcast_to(lut[idx][None], (height, width, 3)))


def fmt_value(x: float) -> str:
    return f"{x:.3g}"  # ASCII minus: the default bitmap font lacks U+2212


def legend_labels(sign: str, norm: str, clip: float, scale: float | None) -> tuple[str, list[str]]:
    """(caption, tick labels under the bar: left, middle, right) in the map's units.

    ``scale`` None: per-image scaling without a given image (each tile has its own scale).
    """
    what = {"abs": "|saliency|", "pos": "saliency > 0", "neg": "-saliency > 0", "signed": "saliency"}[sign]
    pct = "max" if clip >= 100 else f"p{clip:g}"
    caption = f"{what} · scale {pct} {'of each image' if norm == 'image' else 'of the variant'}"
    if scale is None:
        s, half = f"{pct} of each image", ""
        return caption, ([f"-{pct}", "0", f"+{pct}"] if sign == "signed" else ["0", half, s])
    if sign == "signed":
        return caption, [fmt_value(-scale), "0", "+" + fmt_value(scale)]
    sgn = -1.0 if sign == "neg" else 1.0
    return caption, ["0", fmt_value(sgn * scale / 2), fmt_value(sgn * scale)]


@cache
def _font(size: int = 11):
    return ImageFont.load_default(size=size)


def legend_image(cmap: str, caption: str, ticks: list[str], width: int = 300) -> np.ndarray:
    """(H, width, 3) uint8: caption, colour bar, tick labels (left, middle, right)."""
    img = Image.new("RGB", (width, 42), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font()
    draw.text((4, 1), caption, fill=(82, 96, 109), font=font)
    img.paste(Image.fromarray(colour_bar(cmap, width - 8, 10)), (4, 16))
    for x, text, anchor in zip((4, width // 2, width - 4), ticks, ("la", "ma", "ra")):
        draw.text((x, 28), text, fill=(31, 41, 51), font=font, anchor=anchor)
    return np.asarray(img)


class Memo:
    """LRU cache of ``fn``'s results that computes each key once: a thread asking for a key
    another thread is computing waits for that result instead of computing it again (the
    browser asks for a page's sheets while the warm-up thread may be rendering them).

    Args:
        fn: the function; its positional arguments are the key.
        size: results kept (0: none; callers of a key being computed still share it).
    """

    def __init__(self, fn, size: int):
        self.fn, self.size = fn, size
        self._done: OrderedDict = OrderedDict()
        self._running: dict[tuple, threading.Event] = {}
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def __call__(self, *key):
        while True:
            with self._lock:
                if key in self._done:
                    self._done.move_to_end(key)
                    self._hits += 1
                    return self._done[key]
                running = self._running.get(key)
                if running is None:
                    self._misses += 1
                    mine = self._running[key] = threading.Event()
                    break
            running.wait()
            if self.size == 0:
                break
        try:
            value = self.fn(*key)
            with self._lock:
                if self.size:
                    self._done[key] = value
                    while len(self._done) > self.size:
                        self._done.popitem(last=False)
            return value
        finally:
            with self._lock:
                if self._running.get(key) is mine:
                    del self._running[key]
            mine.set()

    def cache_info(self) -> _CacheInfo:
        return _CacheInfo(self._hits, self._misses, self.size, len(self._done))


class Renderer:
    """Renders (and caches) the images of the loaded stores; unknown names raise ``KeyError``.

    Args:
        catalog: the loaded stores; only their patches can be rendered.
        cache_size: number of sheets of each kind kept (0: no cache); a 48-tile sheet of
            128 px patches is about 0.6 MB.
    """

    def __init__(self, catalog: Catalog, cache_size: int = 64):
        self.catalog = catalog
        self._scales: dict[tuple, float] = {}
        self.patch_sheet = Memo(self._patch_sheet, cache_size)
        self.overlay_sheet = Memo(self._overlay_sheet, cache_size)
        self.mask_sheet = Memo(self._mask_sheet, cache_size)
        self.legend_png = Memo(self._legend_png, 256)
        self._warming = threading.Lock()

    def warm(self, source: str, target: str, variant: str, pages, display: tuple) -> bool:
        """Render the patch and overlay sheets of ``pages`` (lists of patch ids: the page just
        shown, then the next) into the cache in a background thread, while the browser puts
        the new grid in place and before the user turns the page; skipped while one runs."""
        if not self._warming.acquire(blocking=False):
            return False
        pages = [tuple(int(p) for p in ids) for ids in pages if len(ids)]

        def run():
            try:
                for ids in pages:
                    self.patch_sheet(ids)
                    self.overlay_sheet(source, target, variant, ids, *display)
            except KeyError:
                pass
            finally:
                self._warming.release()

        threading.Thread(target=run, daemon=True, name="histoxai-warm").start()
        return True

    def _store(self, source: str, target: str, variant: str):
        store = self.catalog.sources.get(source)
        if store is None:
            raise KeyError(f"unknown saliency store {source!r}")
        if target not in store.targets or not store.is_complete(target, variant):
            raise KeyError(f"{source}: no maps for target {target!r}, variant {variant!r}")
        return store

    def check_patch(self, pid: int) -> None:
        patches = self.catalog.patches
        if patches is None or not 0 <= pid < len(patches):
            raise KeyError(f"unknown patch {pid}")

    @staticmethod
    def _row(store, source: str, pid: int) -> int:
        try:
            return int(store.rows([pid])[0])
        except KeyError:
            raise KeyError(f"patch {pid} is not in saliency store {source!r}") from None

    def raw_map(self, source: str, target: str, variant: str, pid: int) -> np.ndarray:
        """(H, W) float32 raw map of patch ``pid``."""
        store = self._store(source, target, variant)
        return read_maps(store, target, variant, [self._row(store, source, pid)])[0]

    def display_values(self, source: str, target: str, variant: str, pids, sign: str) -> np.ndarray:
        """(n, h, w) float32 values shown for ``sign`` (magnitudes; signed values for ``signed``)
        of patches ``pids``, reduced to at most ``MAX_PX`` wide: what the overlays show and
        their scales are taken from. Read at once, from the store's thumbnails where it has
        them (maps larger than ``MAX_PX``)."""
        store = self._store(source, target, variant)
        for pid in pids:
            self.check_patch(pid)
        rows = np.asarray([self._row(store, source, pid) for pid in pids], dtype=np.int64)
        planes = store.read_thumbnails(target, variant, rows)
        if planes is not None:
            return np.stack([shown(p, sign) for p in planes])
        raw = read_maps(store, target, variant, rows)
        return np.stack([shrink(m if sign == "signed" else shown_values(m, sign)) for m in raw])

    def dataset_scale(self, source: str, target: str, variant: str, sign: str, clip: float) -> float:
        """``clip``-th percentile of the shown values over up to ``SCALE_SAMPLE`` maps (cached)."""
        key = (source, target, variant, sign, clip)
        if key not in self._scales:
            store = self._store(source, target, variant)
            n = len(store.patch_ids)
            rows = np.unique(np.linspace(0, n - 1, min(n, SCALE_SAMPLE)).astype(np.int64))
            shows = "abs" if sign == "signed" else sign
            planes = store.read_thumbnails(target, variant, rows) if n else None
            if planes is not None:
                sample = [shown(p, shows) for p in planes]
            else:
                maps = read_maps(store, target, variant, rows) if n else np.zeros((0, 1, 1), np.float32)
                sample = [shrink(shown_values(m, shows)) for m in maps]
            self._scales[key] = clip_scale(np.stack(sample) if sample else np.zeros(0), clip)
        return self._scales[key]

    def scale(
        self, source: str, target: str, variant: str, pid: int | None, norm: str, sign: str, clip: float
    ):
        """The value mapped to the top colour (None: per image without an image)."""
        self._check_display(norm, sign, clip)
        if norm == "dataset":
            return self.dataset_scale(source, target, variant, sign, clip)
        if pid is None:
            return None
        return clip_scale(np.abs(self.display_values(source, target, variant, [pid], sign)[0]), clip)

    @staticmethod
    def _check_display(norm: str, sign: str, clip: float) -> None:
        if norm not in NORMS or sign not in SIGNS or clip not in CLIPS:
            raise KeyError(f"unknown display setting norm={norm!r} sign={sign!r} clip={clip!r}")

    def overlay_units(
        self, source: str, target: str, variant: str, pids, norm: str, sign: str, clip: float
    ) -> np.ndarray:
        """(n, h, w) float32 in [0, 1]: the colour-map position of each pixel of the overlays of
        patches ``pids``, at most ``MAX_PX`` wide and as large as the served patch."""
        self._check_display(norm, sign, clip)
        values = self.display_values(source, target, variant, pids, sign)
        shared = self.dataset_scale(source, target, variant, sign, clip) if norm == "dataset" else None
        size = served_size(self.catalog.patches.patch_size)
        out = np.empty((len(values), size, size), dtype=np.float32)
        for i, v in enumerate(values):
            s = shared if shared is not None else clip_scale(np.abs(v), clip)
            unit = to_unit(v, "signed" if sign == "signed" else "abs", s)
            out[i] = unit if unit.shape == (size, size) else resize_nearest(unit, (size, size))
        return out

    def _overlay_sheet(
        self,
        source: str,
        target: str,
        variant: str,
        pids: tuple[int, ...],
        cmap: str,
        norm: str,
        sign: str,
        clip: float,
        follow: bool,
    ) -> bytes:
        """Palette PNG of the overlays of ``pids``, stacked top to bottom."""
        colour_table(cmap)  # KeyError for an unknown colour map
        units = self.overlay_units(source, target, variant, pids, norm, sign, clip)
        return encode_overlay(units.reshape(-1, units.shape[-1]), cmap, sign, follow)

    def _mask_sheet(self, pids: tuple[int, ...], cls: str) -> bytes:
        """PNG of the ``cls`` outlines of ``pids``, stacked top to bottom."""
        from histoxai.dashboard.masks import outline_rgba

        size = served_size(self.catalog.patches.patch_size)
        for pid in pids:
            self.check_patch(pid)
        return encode_png(np.concatenate([outline_rgba(self.catalog.patches, p, cls, size) for p in pids]))

    def patch(self, pid: int, limit: int = MAX_PX) -> np.ndarray:
        self.check_patch(pid)
        return shrink(np.ascontiguousarray(self.catalog.patches.images([pid])[0]), limit)

    def _patch_sheet(self, pids: tuple[int, ...]) -> bytes:
        """JPEG of the patches ``pids``, stacked top to bottom (read at once and reduced as one
        image: PIL's box reduction, the same block mean as ``shrink``, 10x faster)."""
        for pid in pids:
            self.check_patch(pid)
        images = self.catalog.patches.images(list(pids))  # (n, P, P, 3)
        size = images.shape[1]
        f = size // served_size(size)
        cut = np.ascontiguousarray(images[:, : size // f * f, : size // f * f])
        return encode_jpeg(Image.fromarray(cut.reshape(-1, *cut.shape[2:])).reduce(f))

    def _legend_png(
        self,
        source: str,
        target: str,
        variant: str,
        pid: int | None,
        cmap: str,
        norm: str,
        sign: str,
        clip: float,
    ) -> bytes:
        if cmap not in CMAPS:
            raise KeyError(f"unknown colour map {cmap!r}")
        self._store(source, target, variant)
        if pid is not None:
            self.check_patch(pid)
        caption, ticks = legend_labels(
            sign, norm, clip, self.scale(source, target, variant, pid, norm, sign, clip)
        )
        return encode_png(legend_image(cmap, caption, ticks))
