"""Stain colour handling, the one module for it: colour deconvolution (the haematoxylin
channel), H&E(D) jitter and Macenko normalisation. Used by data (nuclei detection),
models (normalisation inside the regressor), training (augmentation), evaluation (the
baseline) and xai_eval (tissue classes).

Both work in optical density (OD) space, where stains mix linearly (Beer-Lambert):
``OD = -log(I / I0)`` and ``OD = C @ M`` with ``M`` the stain vectors and ``C`` the
per-pixel stain concentrations (colour deconvolution, Ruifrok & Johnston 2001).

- :func:`hed_jitter`: random scaling and shift of each image's H, E and D concentrations
  (Tellez et al. 2018, "Whole-slide mitosis detection in H&E breast histology using PHH3
  as a reference to train distilled stain-invariant CNNs"), a training augmentation.
- :class:`MacenkoNormalizer`: maps every image's stain vectors and concentration range
  onto those of a reference patch (Macenko et al. 2009). It is fitted with torchstain on
  one training patch and lives *inside* the regressor (``Regressor.stain``), so every
  consumer (evaluation, explain, MLflow pyfunc) feeds raw RGB and gets the same input
  transform as training.

Images are (B, 3, H, W) float RGB in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB), as in skimage.color.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_EPS = 1e-6


def rgb_to_hed(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) H, E, D concentrations (may be negative)."""
    od = -torch.log(x.clamp_min(_EPS))
    return torch.einsum("bchw,cd->bdhw", od, HED_FROM_RGB.to(x))


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed`, clipped to [0, 1]."""
    od = torch.einsum("bdhw,dc->bchw", hed, RGB_FROM_HED.to(hed))
    return torch.exp(-od).clamp(0, 1)


def hed_jitter(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image and stain: ``c' = c * U(1 - sigma, 1 + sigma) + U(-sigma, sigma)``.

    Args:
        x: (B, 3, H, W) RGB in [0, 1].
        sigma: jitter strength (Tellez et al. use 0.05); 0 returns ``x``.
        generator: random source (reproducible runs).
    """
    if sigma <= 0:
        return x
    b = x.shape[0]
    u = torch.rand((2, b, 3, 1, 1), generator=generator, device="cpu").to(x.device, x.dtype)
    alpha, beta = 1 + sigma * (2 * u[0] - 1), sigma * (2 * u[1] - 1)
    return hed_to_rgb(rgb_to_hed(x) * alpha + beta)


class MacenkoNormalizer(torch.nn.Module):
    """Batched Macenko stain normalisation towards a reference (a module of the model).

    Per image: OD of pixels denser than ``beta`` in every channel, the plane of the two
    main eigenvectors of their covariance, the stain vectors at the ``alpha`` and
    ``100 - alpha`` percentile angles in that plane, concentrations by least squares,
    concentrations rescaled so their 99th percentile matches the reference, and the
    image rebuilt with the reference stain vectors (Macenko et al. 2009, Sec. 2).
    Images with fewer than ``min_pixels`` stained pixels pass unchanged.

    Args:
        he_ref: (3, 2) reference stain vectors (columns: haematoxylin, eosin).
        max_c_ref: (2,) reference 99th percentile concentrations.
    """

    def __init__(
        self,
        he_ref: torch.Tensor | np.ndarray,
        max_c_ref: torch.Tensor | np.ndarray,
        io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        min_pixels: int = 16,
    ):
        super().__init__()
        self.register_buffer("he_ref", torch.as_tensor(np.asarray(he_ref), dtype=torch.float32).reshape(3, 2))
        self.register_buffer(
            "max_c_ref", torch.as_tensor(np.asarray(max_c_ref), dtype=torch.float32).reshape(2)
        )
        self.io, self.alpha, self.beta, self.min_pixels = io, alpha, beta, min_pixels

    def reference(self) -> dict[str, list]:
        """The fitted reference, as stored in checkpoints."""
        return {"he_ref": self.he_ref.tolist(), "max_c_ref": self.max_c_ref.tolist()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # eigh/quantiles need fp32
            return self._normalize(x.float()).to(x.dtype)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        od = -torch.log((x * 255 + 1) / self.io).reshape(b, 3, h * w)  # (B, 3, N)
        stained = (od >= self.beta).all(dim=1)  # (B, N)
        n = stained.sum(-1)  # (B,)
        wgt = stained.to(od.dtype).unsqueeze(1)
        mean = (od * wgt).sum(-1, keepdim=True) / n.clamp_min(1)[:, None, None]
        dev = (od - mean) * wgt
        cov = dev @ dev.transpose(1, 2) / (n - 1).clamp_min(1)[:, None, None]  # (B, 3, 3)
        cov = cov + 1e-6 * torch.eye(3, device=x.device)  # keeps eigh stable on flat images
        _, vecs = torch.linalg.eigh(cov)
        plane = vecs[:, :, 1:3]  # (B, 3, 2): the two largest eigenvectors
        proj = plane.transpose(1, 2) @ od  # (B, 2, N)
        phi = torch.atan2(proj[:, 1], proj[:, 0]).masked_fill(~stained, float("nan"))
        phi_lo = torch.nanquantile(phi, self.alpha / 100, dim=-1)
        phi_hi = torch.nanquantile(phi, 1 - self.alpha / 100, dim=-1)
        v_lo = (plane @ torch.stack([phi_lo.cos(), phi_lo.sin()], -1).unsqueeze(-1)).squeeze(-1)  # (B, 3)
        v_hi = (plane @ torch.stack([phi_hi.cos(), phi_hi.sin()], -1).unsqueeze(-1)).squeeze(-1)
        # haematoxylin first: the vector with the larger red OD component (as torchstain)
        first = (v_lo[:, 0] > v_hi[:, 0])[:, None]
        he = torch.stack(
            [torch.where(first, v_lo, v_hi), torch.where(first, v_hi, v_lo)], dim=-1
        )  # (B, 3, 2)
        enough = (n >= self.min_pixels)[:, None, None] & torch.isfinite(he).all(dim=(1, 2), keepdim=True)
        he = torch.where(enough, he, self.he_ref.expand_as(he))  # placeholder; such images pass unchanged
        conc = torch.linalg.pinv(he) @ od  # (B, 2, N)
        max_c = torch.quantile(conc, 0.99, dim=-1).clamp_min(_EPS)  # (B, 2)
        conc = conc * (self.max_c_ref / max_c).unsqueeze(-1)
        out = (self.io * torch.exp(-self.he_ref @ conc)).clamp(max=255) / 255  # (B, 3, N)
        ok = enough[:, 0, 0] & torch.isfinite(out).all(dim=(1, 2))
        out = torch.where(ok[:, None, None], out, x.reshape(b, 3, h * w))
        return out.reshape(b, 3, h, w)


def fit_macenko(
    image: np.ndarray, io: float = 240.0, alpha: float = 1.0, beta: float = 0.15
) -> MacenkoNormalizer:
    """Fit a :class:`MacenkoNormalizer` to a reference patch with torchstain.

    Args:
        image: (H, W, 3) uint8 reference patch (mostly tissue).
    """
    from torchstain.torch.normalizers.macenko import TorchMacenkoNormalizer

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"stain reference must be an (H, W, 3) uint8 patch, got {image.shape} {image.dtype}")
    ref = TorchMacenkoNormalizer()
    ref.fit(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), Io=io, alpha=alpha, beta=beta)
    return MacenkoNormalizer(ref.HERef, ref.maxCRef, io=io, alpha=alpha, beta=beta)


def pick_reference(images: np.ndarray, beta: float = 0.15) -> int:
    """Index of the patch with the most stained pixels (a good Macenko reference)."""
    od = -np.log((images.astype(np.float32) + 1) / 240.0)
    return int(np.argmax((od >= beta).all(axis=-1).sum(axis=(1, 2))))


def haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB (uint8, or float in [0, 1]) -> (...) float32 haematoxylin optical density
    (skimage's colour deconvolution with the Ruifrok & Johnston vectors above).

    Raises:
        ValueError: the last axis is not RGB.
    """
    from skimage.color import rgb2hed

    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"haematoxylin needs (..., H, W, 3) RGB, got shape {rgb.shape}")
    return rgb2hed(rgb)[..., 0].astype(np.float32)
