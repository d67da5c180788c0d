"""Masked autoencoder (MAE; He et al. 2022, facebookresearch/mae `models_mae.py`) around a vitlab
ViT, in plain PyTorch.

image -> random_masking: per sample, keep N·(1 − r) of the N patches, at random
      -> encoder: the ViT on the visible patches only (its embedding, class token, positional
         variant through `keep`: pos_embed/base.py; its blocks and final norm; no head)
      -> decoder: linear to its width, a learned mask token for every removed patch, all put
         back in raster order with ids_restore, fixed 2-D sin-cos positions, a few blocks,
         LayerNorm, linear to the P·P·C pixels of each patch
      -> loss: the per-patch mean squared error, averaged over the removed patches only; with
         norm_pix_loss the target patch is normalised by its own mean and variance (ε 1e-6).

The encoder sees only the visible patches, so a step costs about (1 − r) of the encoder's full
cost plus the light decoder: the point of MAE. Pixels are flattened in vitlab's patch order
(C, P, P) (models/embed.py `patchify`; MAE uses (P, P, C): a per-patch mean is the same).
Embeddings whose token sees more than its own patch (SPT's half-patch shifts) get an image
whose removed patches are zeroed, so the encoder never sees a removed pixel. What cannot be
masked patch by patch is refused: the conv tokenizer's and a CNN stem's tokens are overlapping
receptive fields, not patches; GPSA computes its positions for the whole grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .embed import PatchEmbed, patchify
from .layers import Attention, Block
from .pos_embed.sincos_2d import sincos_2d_table
from .spt import ShiftedPatchEmbed
from .vit import VisionTransformer

PATCHWISE = (PatchEmbed, ShiftedPatchEmbed)  # embeddings whose tokens are the image's P×P patches


def random_masking(batch: int, num_patches: int, mask_ratio: float, noise: torch.Tensor | None = None,
                   device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's random_masking, per sample: noise ~ U(0, 1) over the patches, ids_shuffle =
    argsort(noise) (small noise is kept), ids_restore = argsort(ids_shuffle), keep the first
    N·(1 − r). Returns keep (B, n) (raster indices of the visible patches, in shuffled order),
    mask (B, N) (0 visible, 1 removed, in raster order) and ids_restore (B, N)."""
    len_keep = int(num_patches * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, num_patches, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask[:, :len_keep] = 0
    return ids_shuffle[:, :len_keep], torch.gather(mask, 1, ids_restore), ids_restore


def normalized_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch (a row of P·P·C pixels) minus its mean, over its (unbiased) std: MAE's
    norm_pix_loss target."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      norm_pix_loss: bool = True) -> torch.Tensor:
    """MAE's forward_loss: mean over the removed patches (mask 1) of the per-patch MSE between
    pred and target (B, N, P·P·C); the target normalised per patch with norm_pix_loss."""
    if norm_pix_loss:
        target = normalized_patches(target)
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """The inverse of models.embed.patchify: (B, h·w, C·P·P) -> (B, C, h·P, w·P)."""
    B, _, D = patches.shape
    (h, w), P = grid, patch_size
    x = patches.reshape(B, h, w, D // (P * P), P, P).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, D // (P * P), h * P, w * P)


def hide_removed(images: torch.Tensor, mask: torch.Tensor, patch_size: int,
                 grid: tuple[int, int]) -> torch.Tensor:
    """The images with every removed patch (mask 1) set to zero."""
    pixels = mask.view(-1, 1, *grid).repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
    return images * (1 - pixels).to(images.dtype)


def check_encoder(encoder: nn.Module) -> None:
    """One line naming what cannot be masked patch by patch."""
    embed = getattr(encoder, "embed", None)
    if not isinstance(encoder, VisionTransformer) or not isinstance(embed, PATCHWISE):
        name = type(embed if isinstance(encoder, VisionTransformer) else encoder).__name__
        raise ConfigError(f"model.embed: MAE masks the image patch by patch, but {name}'s tokens "
                          "are not the image's patches (a conv tokenizer's or CNN stem's receptive "
                          "fields overlap); use the linear patch projection (model.embed=null) or SPT")
    custom = next((b.attn for b in encoder.blocks if not isinstance(b.attn, Attention)), None)
    if custom is not None:
        raise ConfigError(f"model.attention: {type(custom).__name__} computes its positions for "
                          "the whole grid and cannot attend over MAE's visible patches only; use "
                          "the standard attention or LSA")


def mae_init(module: nn.Module) -> None:
    """MAE's initialisation (the JAX ViT's): xavier-uniform linear layers with zero biases,
    LayerNorms at one and zero; a patch projection (PatchEmbed) as the linear map it is."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            nn.init.xavier_uniform_(m.proj.weight.view(m.proj.weight.shape[0], -1))


class MaeDecoder(nn.Module):
    """MAE's light decoder: the encoder's tokens projected to `dim`, mask tokens for the removed
    patches, un-shuffled, fixed sin-cos positions (the class token's is zero, as MAE's), `depth`
    pre-LN blocks, LayerNorm and a linear prediction of each patch's pixels."""

    def __init__(self, embed_dim: int, grid: tuple[int, int], patch_pixels: int, num_prefix: int,
                 dim: int = 512, depth: int = 8, num_heads: int = 16, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % 4 or dim % num_heads:
            raise ConfigError(f"MAE decoder width {dim} must be divisible by 4 (sin-cos positions) "
                              f"and by its {num_heads} heads; change module.mae.decoder_dim")
        self.grid, self.num_prefix = tuple(grid), num_prefix
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", sincos_2d_table(self.grid, dim), persistent=False)  # fixed
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_pixels)
        mae_init(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (B, prefix + n, D) of the visible patches -> predicted pixels (B, N, P·P·C)."""
        x = self.embed(latent)
        p, (B, N) = self.num_prefix, ids_restore.shape
        removed = self.mask_token.to(x.dtype).expand(B, N - (x.shape[1] - p), -1)
        patches = torch.cat([x[:, p:], removed], dim=1)  # visible first, as ids_shuffle ordered them
        patches = patches.gather(1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :p], patches + self.pos.to(x.dtype)], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, p:]


class MaskedAutoencoder(nn.Module):
    def __init__(self, encoder: VisionTransformer, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
                 decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 decoder_mlp_ratio: float = 4.0, init: str = "mae"):
        """`encoder`: a vitlab ViT with a patch-wise embedding (linear projection or SPT); its
        head, if any, is dropped (pre-training trains none; fine-tuning makes a new one).
        `init`: mae (MAE's xavier-uniform init of the encoder too) | vit (the ViT's own)."""
        super().__init__()
        check_encoder(encoder)
        if init not in ("mae", "vit"):
            raise ConfigError(f"module.mae.init={init!r} is not one of mae, vit")
        self.patch_size = encoder.embed.patch_size
        self.grid = tuple(encoder.embed.grid)
        self.num_patches = math.prod(self.grid)
        if not 0 <= mask_ratio < 1 or int(self.num_patches * (1 - mask_ratio)) < 1:
            raise ConfigError(f"module.mae.mask_ratio={mask_ratio} must be in [0, 1) and leave at "
                              f"least one of the {self.num_patches} patches visible")
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        encoder.head = nn.Identity()
        if init == "mae":
            mae_init(encoder)
            if encoder.cls_token is not None:
                nn.init.normal_(encoder.cls_token, std=0.02)
        self.encoder = encoder
        embed = encoder.embed
        in_chans = embed.in_chans if isinstance(embed, ShiftedPatchEmbed) else embed.proj.in_channels
        self.in_chans = in_chans
        self.hides_pixels = not isinstance(embed, PatchEmbed)  # SPT sees its neighbours' pixels
        self.decoder = MaeDecoder(encoder.embed_dim, self.grid, in_chans * self.patch_size**2,
                                  encoder.num_prefix, decoder_dim, decoder_depth, decoder_heads,
                                  decoder_mlp_ratio)

    @property
    def pos_embed(self) -> nn.Module:
        """The encoder's positional variant (the positional-similarity figure reads it)."""
        return self.encoder.pos_embed

    def no_weight_decay(self) -> set[str]:
        """The encoder's class token and positional tables, and the mask token."""
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"decoder.mask_token"}

    def masking(self, batch: int, noise: torch.Tensor | None = None, device=None):
        """random_masking over this model's patches: keep, mask, ids_restore."""
        return random_masking(batch, self.num_patches, self.mask_ratio, noise, device)

    def reconstruct(self, images: torch.Tensor, noise: torch.Tensor | None = None):
        """(predicted pixels (B, N, P·P·C), mask (B, N)) for normalised images (B, C, H, W);
        `noise` (B, N) fixes the masking (validation, figures)."""
        keep, mask, ids_restore = self.masking(images.shape[0], noise, images.device)
        seen = hide_removed(images, mask, self.patch_size, self.grid) if self.hides_pixels else images
        latent = self.encoder.forward_features(seen, keep)
        return self.decoder(latent, ids_restore), mask

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None):
        """(loss, predicted pixels, mask), as MAE's forward."""
        pred, mask = self.reconstruct(images, noise)
        target = patchify(images, self.patch_size)
        return masked_patch_loss(pred.float(), target.float(), mask, self.norm_pix_loss), pred, mask
