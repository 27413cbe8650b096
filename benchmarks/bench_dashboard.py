"""Dashboard server time on 20,000 patches x 6 method variants (synthetic stores in a temp dir).

Drives the callback functions directly (no browser, no HTTP), including Dash's JSON
serialisation of what they return, and the overlay renderer:

- filter change: ``update`` (the one callback of a filter change: URL, changed control
  values, grid of 48 tiles, histograms);
- page of 48 tiles: ``update`` for another page + the page's two image sheets (48 patches,
  48 overlays) rendered by ``--threads`` threads (as the WSGI server's threads serve the
  browser's two parallel image requests), cold and warm cache.

Prints p50/p95 per step and the ratio of p95 to the 150 ms budget (below 1 is within).
The browser's view of the same (input -> grid updated with images) is
``bench_dashboard_browser.py``.

Run::

    .venv/bin/python benchmarks/bench_dashboard.py [--patches 20000] [--size 64] [--repeats 60]
    .venv/bin/python benchmarks/bench_dashboard.py --patches 4000 --size 256   # cold page at 256 px
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from histoxai.dashboard.app import use_fast_json
from histoxai.dashboard.callbacks import update
from histoxai.dashboard.catalog import load_catalog
from histoxai.dashboard.overlays import Renderer
from histoxai.dashboard.state import View, parse_view, view_query
from histoxai.dashboard.synthetic import VARIANTS, fake_saliency
from histoxai.data.store import SampleBlock, write_store

BUDGET_MS = 150.0
PER_SAMPLE = 2000
SIX = {
    **VARIANTS,
    "gradcam": {"method": "gradcam", "params": {}},
    "ig": {"method": "ig", "params": {"steps": 32}},
}


def build(root: Path, n: int, size: int, seed: int = 0):
    """A patch store of ``n`` random-texture patches and one saliency store (md, 6 variants)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k, start in enumerate(range(0, n, PER_SAMPLE)):
        m = min(PER_SAMPLE, n - start)
        base = rng.integers(120, 255, size=(m, 1, 1, 3), dtype=np.uint8)
        images = (base - rng.integers(0, 90, size=(m, size, size, 1), dtype=np.uint8)).astype(np.uint8)
        side = int(np.ceil(np.sqrt(m)))
        table = pd.DataFrame(
            {
                "row": np.arange(m) // side,
                "col": np.arange(m) % side,
                "md": rng.uniform(0.3, 2.4, m),
                "fa": rng.uniform(0.0, 1.0, m),
            }
        )
        blocks.append(SampleBlock(f"s{k + 1}", images, table))

    def splits(index: pd.DataFrame) -> pd.DataFrame:
        return index.assign(split_random=rng.choice(["train", "val", "test", "out"], len(index)))

    patches = write_store(root / "patches", blocks, {"source": "bench"}, splits)
    fake_saliency(patches, root / "saliency" / "mdfa", ["md"], SIX, seed=seed)
    return patches


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1000.0


def serialise(obj) -> int:
    from dash._utils import to_json

    return len(to_json(obj))


def random_change(rng: np.random.Generator, catalog, view: View) -> tuple[str, object]:
    table = catalog.tables[view.target]
    kind = rng.choice(
        ["split", "samples", "range-y", "range-delta", "range-rel_delta", "sort", "desc", "variant"]
    )
    if kind == "split":
        return kind, str(rng.choice(["all", *catalog.splits]))
    if kind == "samples":
        k = int(rng.integers(1, min(3, len(catalog.samples)) + 1))
        return kind, list(rng.choice(catalog.samples, size=k, replace=False))
    if kind.startswith("range-"):
        lo, hi = table.bounds[kind[6:]]
        a, b = sorted(rng.uniform(lo, hi, 2))
        return kind, [float(a), float(b)]
    if kind == "sort":
        return kind, str(rng.choice(["id", "y", "absdelta", "absrel"]))
    if kind == "desc":
        return kind, bool(rng.integers(0, 2))
    return kind, str(rng.choice(catalog.variants(view.target)))


def pct(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)), float(np.percentile(xs, 95))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=64, help="patch side in px")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=4, help="threads rendering a page's overlays")
    parser.add_argument(
        "--root", type=Path, default=None, help="keep the built stores here and reuse them on the next run"
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    use_fast_json()  # as create_app does
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        root = args.root or Path(tmp)
        if not (root / "saliency" / "mdfa" / "manifest.json").is_file():
            t = time.perf_counter()
            build(root, args.patches, args.size)
            print(f"built {args.patches:,} patches x {len(SIX)} variants in {time.perf_counter() - t:.1f} s")
        (catalog, load_ms) = timed(load_catalog, root / "patches", (), root / "saliency")
        renderer = Renderer(catalog, cache_size=4096)
        search = view_query(parse_view("?target=md&variant=gradcampp", catalog))

        steps: dict[str, list[float]] = {"filter change": []}
        for _ in tqdm(range(args.repeats), desc="filter changes", leave=False):
            view = parse_view(search, catalog)
            kind, value = random_change(rng, catalog, view)
            t = time.perf_counter()
            out = update(catalog, kind, value, search, "", "/single")
            serialise(list(out.values()))
            steps["filter change"].append((time.perf_counter() - t) * 1000.0)
            search = out.get(("url", "search"), search)

        page_steps: dict[str, list[float]] = {
            k: [] for k in ("page callback", "48 tiles cold", "48 tiles warm", "page")
        }
        cold_cpu: list[float] = []
        view = parse_view("?target=md&variant=gradcampp&sort=absdelta&desc=1", catalog)
        n_pages = -(-len(catalog.tables["md"]) // view.per)
        table = catalog.tables["md"]
        from histoxai.dashboard.filters import select
        from histoxai.dashboard.state import CMAPS

        pool = ThreadPoolExecutor(args.threads)
        for i in tqdm(range(min(args.repeats, n_pages)), desc="pages", leave=False):
            page = view.replace(page=int(rng.integers(1, n_pages + 1)), variant=str(rng.choice(list(SIX))))
            q = view_query(page)
            t = time.perf_counter()
            serialise(list(update(catalog, "page", page.page, q, "", "/single").values()))
            a = (time.perf_counter() - t) * 1000.0
            rows = select(catalog, page)[(page.page - 1) * page.per : page.page * page.per]
            ids = table.patch_id[rows].tolist()
            cmap = CMAPS[i % len(CMAPS)]

            # the browser asks for a page's two sheets (patches, overlays) at once
            sheet = (tuple(ids), page.variant, cmap)
            jobs = (
                lambda s=sheet: renderer.patch_sheet(s[0]),
                lambda s=sheet: renderer.overlay_sheet(
                    "mdfa", "md", s[1], s[0], s[2], "image", "abs", 99.0, True
                ),
            )
            t, cpu = time.perf_counter(), time.process_time()
            list(pool.map(lambda job: job(), jobs))
            b = (time.perf_counter() - t) * 1000.0
            cold_cpu.append((time.process_time() - cpu) * 1000.0)
            t = time.perf_counter()
            list(pool.map(lambda job: job(), jobs))
            c = (time.perf_counter() - t) * 1000.0
            for k, v in zip(page_steps, (a, b, c, a + b)):
                page_steps[k].append(v)
        pool.shutdown()

    import os

    print(
        f"\nload_catalog: {load_ms:.0f} ms ({args.patches:,} patches of {args.size} px, {len(SIX)} variants)"
    )
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.threads} render threads")
    print(f"{'step':<22}{'p50 ms':>10}{'p95 ms':>10}{'p95 / 150 ms':>15}")
    for name, xs in {**steps, **page_steps}.items():
        p50, p95 = pct(xs)
        print(f"{name:<22}{p50:>10.1f}{p95:>10.1f}{p95 / BUDGET_MS:>15.2f}")
    p50, p95 = pct(cold_cpu)
    print(f"{'48 tiles cold, CPU':<22}{p50:>10.1f}{p95:>10.1f}   (process CPU time, all threads)")
    worst = max(pct(steps["filter change"])[1], pct(page_steps["page"])[1])
    print(f"\nworst p95 {worst:.1f} ms vs budget {BUDGET_MS:.0f} ms: ratio {worst / BUDGET_MS:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
