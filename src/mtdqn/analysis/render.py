"""Frames of recorded states, rendered from the environment's own internal state.

Full-size frames are drawn for the overlap pictures; small thumbnails of every state are packed into one
PNG "sprite sheet" per task for the report's hover pictures (one image per task compresses far better and
encodes far faster than thousands of small ones).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mtdqn.analysis.rollout import StateSet
from mtdqn.config import TaskConfig
from mtdqn.runlog import atomic_write_bytes
from mtdqn.tasks import make_env
from mtdqn.tasks.env_state import render_env_state

# Gymnasium draws classic control with pygame: no window, no sound device, no greeting.
for _name, _value in (
    ("SDL_VIDEODRIVER", "dummy"),
    ("SDL_AUDIODRIVER", "dummy"),
    ("PYGAME_HIDE_SUPPORT_PROMPT", "1"),
):
    os.environ.setdefault(_name, _value)


class FrameRenderer:
    """Renders recorded states of one set of tasks; one ``rgb_array`` environment per task, made on demand."""

    def __init__(self, states: StateSet) -> None:
        self.states = states
        self._envs: dict[int, object] = {}

    def _env(self, t: int):
        if t not in self._envs:
            env_id = self.states.env_ids[t]
            if env_id.startswith("ALE/"):  # the colour screen of a recorded emulator state
                from mtdqn.tasks.atari import make_atari_env

                env = make_atari_env(env_id, render_mode="rgb_array", record_states=True)
            else:
                env = make_env(TaskConfig(env_id=env_id), render_mode="rgb_array")
            env.reset(seed=0)
            self._envs[t] = env
        return self._envs[t]

    def frame(self, row: int) -> np.ndarray:
        """The RGB frame ``(H, W, 3)`` of state ``row``."""
        t = int(self.states.task[row])
        state = self.states.env_state[row]
        return render_env_state(self._env(t), state[~np.isnan(state)])

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


@dataclass
class SpriteSheet:
    """Thumbnails of one task's states in a grid: state ``rows[i]`` sits at tile ``i`` (row-major)."""

    png: bytes
    rows: np.ndarray
    tile_width: int
    tile_height: int
    columns: int


def thumbnail(frame: np.ndarray, width: int) -> np.ndarray:
    """``frame`` scaled to ``width`` pixels wide (box filter; the aspect ratio is kept)."""
    img = Image.fromarray(frame)
    factor = img.width // width
    if factor > 1:  # an integer box reduction first: several times faster than a resize of the full frame
        img = img.reduce(factor)
    if img.width != width:
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.BOX)
    return np.asarray(img)


def sprite_sheet(states: StateSet, rows: np.ndarray, width: int, columns: int = 40) -> SpriteSheet:
    """A sprite sheet with a thumbnail of each of ``rows`` (states of one task), in order."""
    renderer = FrameRenderer(states)
    try:
        tiles = [thumbnail(renderer.frame(int(r)), width) for r in rows]
    finally:
        renderer.close()
    h, w = tiles[0].shape[:2]
    cols = min(columns, len(tiles))
    grid = np.full((-(-len(tiles) // cols) * h, cols * w, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile[..., :3]
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG", compress_level=6)
    return SpriteSheet(buf.getvalue(), np.asarray(rows), w, h, cols)


def sheet_chunks(states: StateSet, n_chunks: int) -> list[np.ndarray]:
    """The rows of each task split into ``n_chunks`` contiguous pieces (one sprite sheet each)."""
    chunks = []
    for t in range(states.n_tasks):
        rows = np.flatnonzero(states.task == t)
        chunks += [c for c in np.array_split(rows, min(n_chunks, len(rows))) if len(c)]
    return chunks


def _sheet_job(states_path: str, rows: np.ndarray, width: int) -> SpriteSheet:
    return sprite_sheet(StateSet.load(Path(states_path)), rows, width)


class Thumbnails:
    """Hover thumbnails of every state, rendered by worker processes while the caller computes something
    else, or read from the cache file written by an earlier analysis of the same states."""

    def __init__(self, states: StateSet, states_path: Path, width: int, cache: Path, workers: int) -> None:
        import hashlib
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.cache = cache
        self.key = f"{hashlib.sha256(states_path.read_bytes()).hexdigest()}:{width}"
        self.sheets = load_sheets(cache, self.key)
        self._pool, self._futures = None, []
        if self.sheets is None:
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            self._futures = [
                self._pool.submit(_sheet_job, str(states_path), rows, width)
                for rows in sheet_chunks(states, workers)
            ]

    def result(self) -> list[SpriteSheet]:
        """All sheets (waits for the workers the first time, then caches them)."""
        if self.sheets is None:
            try:
                self.sheets = [f.result() for f in self._futures]
            finally:
                self._pool.shutdown(cancel_futures=True)
            save_sheets(self.cache, self.sheets, self.key)
        return self.sheets


def save_sheets(path: Path, sheets: list[SpriteSheet], key: str) -> None:
    """Cache sprite sheets as a plain ``.npz`` (PNG bytes as uint8 arrays), tagged with ``key``."""
    arrays: dict[str, np.ndarray] = {"key": np.array(key)}
    for t, sheet in enumerate(sheets):
        arrays[f"png{t}"] = np.frombuffer(sheet.png, dtype=np.uint8)
        arrays[f"rows{t}"] = sheet.rows
        arrays[f"shape{t}"] = np.array([sheet.tile_width, sheet.tile_height, sheet.columns])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_sheets(path: Path, key: str) -> list[SpriteSheet] | None:
    """The sheets cached in ``path`` if they were made with ``key``, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            n = sum(1 for name in data.files if name.startswith("png"))
            return [
                SpriteSheet(data[f"png{t}"].tobytes(), data[f"rows{t}"], *(int(v) for v in data[f"shape{t}"]))
                for t in range(n)
            ]
    except (OSError, KeyError, ValueError):
        return None
