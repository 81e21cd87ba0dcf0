"""The batch transform: seeded shifts and flips, the training images' own pixel permutations (if the
dataset asks for them), then the dataset's pixel range, on the batch's device.

A torch generator makes every random choice, so a seed and an epoch fix them on any device.
"""

from __future__ import annotations

import torch

from ..devices import to_device
from .dataset import DatasetMeta
from .variants import image_permutations


class BatchTransform:
    """uint8 NHWC batch → float NCHW: random shifts and flips (seeded), then the pixel range.

    The random choices come from a torch generator, so a seed fixes them on every device.  On
    the CPU shift, flip and scaling are one fused, multi-threaded pass (:func:`_fused_cpu`); on
    a GPU they are a few tensor operations.  Both give the same floats, bit for bit.

    ``reuse_output=True`` writes every CPU batch into the same memory (as FFCV's loaders do with
    theirs), which saves faulting in fresh pages for each batch: the result is then only valid
    until the next call — right for a training loop, wrong for collecting batches.

    A dataset converted with ``pixel_shuffle: per_image_train`` has each training image's pixels
    permuted after shift and flip, by the permutation of that image's index (the authors' fig 20):
    the training loop passes the batch's ``indices``; evaluation passes none, so validation and
    test images stay clean.
    """

    def __init__(self, meta: DatasetMeta, device="cpu", shift: int = 4, channels_last: bool = True,
                 reuse_output: bool = False):
        # JPEG datasets are augmented by the loader's random resized crop instead of shifts
        self.shift, self.hflip = (0 if meta.encoding == "jpeg" else shift), meta.hflip
        mean, std = meta.normalization()
        scale = torch.tensor((1.0 / std).tolist(), dtype=torch.float32)
        offset = torch.tensor((-mean / std).tolist(), dtype=torch.float32)
        self.scale = scale.to(device).view(1, -1, 1, 1)
        self.offset = offset.to(device).view(1, -1, 1, 1)
        # value v of channel c → v * scale[c] + offset[c], rounded exactly as the tensor path rounds
        self._hw = meta.shape[:2]
        self.lut = (torch.arange(256, dtype=torch.float32)[:, None] * scale[None, :] + offset[None, :]).numpy()
        self.channels_last = channels_last
        self.reuse_output, self._buffer = reuse_output, torch.empty(0)
        self.shuffle_seed, self.n_train, self.device = meta.train_pixel_shuffle_seed, meta.n_train, device
        self._permutations = None  # (n_train, H·W) on ``device``, made at the first shuffled batch

    @property
    def permutes(self) -> bool:
        """Whether training batches are pixel-shuffled (and so need their image indices)."""
        return self.shuffle_seed is not None

    def permutations(self, indices: torch.Tensor) -> torch.Tensor:
        """The pixel permutation of each training image in ``indices``: (n, H·W) int64."""
        if self._permutations is None:
            h, w = self._hw
            table = image_permutations(self.shuffle_seed, range(self.n_train), h * w)
            self._permutations = torch.from_numpy(table).to(self.device)
        return self._permutations[indices.to(self._permutations.device)].long()

    def _shuffle(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """NHWC ``x`` with image k's pixel positions taken in the order of its permutation."""
        n, h, w, c = x.shape
        rows = self.permutations(indices).to(x.device)
        return x.reshape(n, h * w, c)[torch.arange(n, device=x.device)[:, None], rows].reshape(n, h, w, c)

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image offsets in [0, 2·shift] (row, column) and flip decisions, on the CPU."""
        s = self.shift
        offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        return offsets, flips & self.hflip

    def draw_epoch(self, sizes: list[int], generator: torch.Generator,
                   device: torch.device | str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The draws of every global batch of an epoch (``sizes``), in one copy to ``device``.

        The numbers are those of one :meth:`draw` per batch, in order; drawing them up front means
        the training loop never copies random choices to the GPU between two steps.
        """
        if not sizes:
            return []
        drawn = [self.draw(m, generator) for m in sizes]
        offsets, flips = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
        device = torch.device(device)
        offsets, flips = to_device(offsets, device), to_device(flips, device)
        return list(zip(offsets.split(sizes), flips.split(sizes)))

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Shift each image by up to ``shift`` pixels (zero fill) and flip it with probability ½."""
        return self._shift_flip(x, *self.draw(len(x), generator))

    def _shift_flip(self, x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        s = self.shift
        offsets, flips = offsets.to(x.device), flips.to(x.device)
        if s:
            padded = torch.nn.functional.pad(x, (0, 0, s, s, s, s))
            rows = offsets[:, :1] + torch.arange(h, device=x.device)
            cols = offsets[:, 1:] + torch.arange(w, device=x.device)
            x = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        if self.hflip:
            x = torch.where(flips[:, None, None, None], x.flip(2), x)
        return x

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()  # NCHW view of NHWC memory: channels-last already
        return x.mul_(self.scale).add_(self.offset)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, fused: bool = True,
                 part: tuple[int, int] | None = None,
                 draws: tuple[torch.Tensor, torch.Tensor] | None = None,
                 indices: torch.Tensor | None = None) -> torch.Tensor:
        """Augment (with ``draws`` of the batch, or new ones from ``generator``) and scale ``x``.

        ``part=(start, m)``: ``x`` holds images start… of a global batch of m (one process's
        share); the random choices are those of all m and this share's are used.  ``indices``:
        the training-file indices of ``x``'s images, for a dataset whose training pixels are
        shuffled per image (ignored otherwise)."""
        n = len(x)
        start, m = part or (0, n)
        if draws is None and generator is not None:
            draws = self.draw(m, generator)
        if draws is not None:
            offsets, flips = draws[0][start:start + n], draws[1][start:start + n]
        else:
            offsets, flips = torch.full((n, 2), self.shift), torch.zeros(n, dtype=torch.bool)
        shuffle = self.permutes and indices is not None
        if x.device.type == "cpu" and fused:
            if not self.reuse_output:
                out = torch.empty(x.shape, dtype=torch.float32)
            else:  # the first len(x) images of a buffer sized for the largest batch seen
                if self._buffer.shape[1:] != x.shape[1:] or len(self._buffer) < n:
                    self._buffer = torch.empty(x.shape, dtype=torch.float32)
                out = self._buffer[:n]
            _fused_cpu(x.contiguous().numpy(), offsets[:, 0].numpy(), offsets[:, 1].numpy(), flips.numpy(),
                       self.lut, self.shift, out.numpy())
            if shuffle:  # scaling is per channel, so permuting after it moves the same values
                out = self._shuffle(out, indices)
            out = out.permute(0, 3, 1, 2)
        else:
            x = self._shift_flip(x, offsets, flips) if draws is not None else x
            out = self._scale(self._shuffle(x, indices) if shuffle else x)
        return out if self.channels_last else out.contiguous()


def _fused_cpu(x, rows, cols, flips, lut, shift, out):
    """out[i, r, c] = lut[x[i, r + rows[i] − shift, c′ + cols[i] − shift]], c′ = c or W−1−c when
    flipped, lut[0] outside the image — shift, flip and scaling in one parallel pass.

    numba compiles the kernel once per machine (about 1.6 s of CPU) and keeps it on disk
    (``cache=True``: ``__pycache__`` beside this file, or ``NUMBA_CACHE_DIR``), so a training job
    loads it in milliseconds; numba compiles again when this file changes or on another kind of
    CPU.  It refers to nothing outside itself: numba cannot cache a nested function that does."""
    import numba

    global _fused_cpu_kernel
    if _fused_cpu_kernel is None:

        @numba.njit(parallel=True, nogil=True, cache=True)
        def kernel(x, rows, cols, flips, lut, shift, out):
            n, h, w, c = x.shape
            for i in numba.prange(n):
                dy, dx = rows[i] - shift, cols[i] - shift
                lo, hi = max(0, -dx), min(w, w - dx)  # shifted columns whose source is inside
                for r in range(h):
                    o, sr = out[i, r], r + dy
                    if sr < 0 or sr >= h:  # columns [0, left) and [right, w) show lut[0]
                        left, right = w, w
                    elif flips[i]:  # output column w − 1 − k shows shifted column k
                        left, right = w - hi, w - lo
                    else:
                        left, right = lo, hi
                    for col in range(left):
                        for ch in range(c):
                            o[col, ch] = lut[0, ch]
                    for col in range(right, w):
                        for ch in range(c):
                            o[col, ch] = lut[0, ch]
                    if sr < 0 or sr >= h:
                        continue
                    src = x[i, sr]
                    if flips[i]:
                        for k in range(lo, hi):
                            for ch in range(c):
                                o[w - 1 - k, ch] = lut[src[k + dx, ch], ch]
                    else:
                        for k in range(lo, hi):
                            for ch in range(c):
                                o[k, ch] = lut[src[k + dx, ch], ch]

        _fused_cpu_kernel = kernel
    numba.set_num_threads(min(numba.config.NUMBA_NUM_THREADS, torch.get_num_threads()))  # the job's share
    _fused_cpu_kernel(x, rows, cols, flips, lut, shift, out)


_fused_cpu_kernel = None
