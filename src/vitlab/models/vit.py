"""The Vision Transformer (Dosovitskiy et al., 2021), in plain PyTorch.

image -> embed (patch, hybrid, conv tokenizer, SPT) -> [class token] -> positional variant
      -> L pre-LN blocks (attention: standard, or per block from an `attention` factory: LSA,
      GPSA) -> LayerNorm -> pool (class token | mean of patch tokens | sequence pooling) -> head
With `distill_token` (DeiT, Touvron et al. 2021; timm's VisionTransformerDistilled) a second
token joins beside the class token, with its own position and head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .embed import PatchEmbed
from .layers import Block
from .mimetic import mimetic_init
from .pos_embed import Learned1d, PositionalEmbedding
from .seqpool import SeqPool

POOLS = ("cls", "mean", "seqpool")
INITS = ("default", "mimetic")


def prediction(outputs) -> torch.Tensor:
    """What a model predicts: a distilled ViT's two heads averaged (timm's evaluation rule)."""
    return (outputs[0] + outputs[1]) / 2 if isinstance(outputs, tuple) else outputs


class VisionTransformer(nn.Module):
    kind = "vit"  # what the checks and the exporters ask of a config's model (vitlab/model_kind.py)

    @staticmethod
    def check(embed_dim: int | None = None, num_heads: int | None = None, pool: str = "cls",
              distill_token: bool = False, prefix: str = "") -> None:
        """The rules between arguments (the heads' only when both are given), as ValueError
        naming each `prefix + argument`: config_checks calls this with prefix "model." before
        anything is built."""
        if embed_dim is not None and num_heads is not None and embed_dim % num_heads:
            divisors = [h for h in range(1, 33) if embed_dim % h == 0]
            raise ValueError(f"{prefix}num_heads={num_heads} does not divide {prefix}embed_dim={embed_dim}; "
                             f"use one of {divisors}")
        if pool not in POOLS:
            raise ValueError(f"{prefix}pool={pool!r} is not one of {', '.join(POOLS)}")
        if distill_token and pool != "cls":
            raise ValueError(f"{prefix}distill_token=true needs {prefix}pool=cls (the distillation token "
                             f"sits beside the class token), not {pool}")

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        pool: str = "cls",
        pos_embed: Callable[..., nn.Module] | None = None,
        embed: Callable[..., nn.Module] | None = None,
        attention: Callable[..., nn.Module | None] | None = None,
        class_token_at: int = 0,
        distill_token: bool = False,
        init: str = "default",
        init_args: dict | None = None,
    ):
        """`embed` and `pos_embed` are factories (e.g. functools.partial or Hydra `_partial_`):
        embed(img_size=, patch_size=, in_chans=, embed_dim=) returns a module with `.grid`;
        pos_embed(embed_dim=, grid=, num_prefix=, depth=, num_heads=) a PositionalEmbedding.
        attention(layer=, depth=, grid=, dim=, num_heads=, qkv_bias=, attn_drop=, proj_drop=)
        returns block `layer`'s attention module, or None for the standard one (lsa.py, gpsa.py).
        `class_token_at`: the block before which the class token joins (pool=cls; 0: at the
        stem; ConViT: after its GPSA blocks; negative counts from the end, as a Python index);
        a later class token has no position.
        `distill_token`: DeiT's distillation token and head (pool=cls): it joins with the class
        token, takes the next position, and `head_dist` reads it. As timm, forward returns both
        heads' logits while training with `set_distilled_training()`, else their mean.
        `init`: "default" (truncated normal, as timm) or "mimetic" (each head's query-key and
        value-output products near +I and -I: models/mimetic.py), with `init_args` its options.
        Defaults: linear patch projection and the learned 1-D table at the stem."""
        super().__init__()
        self.check(embed_dim, num_heads, pool, distill_token)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.pool = pool
        self.embed = (embed or PatchEmbed)(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim
        )
        self.num_prefix = (2 if distill_token else 1) if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if self.num_prefix else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distill_token else None
        self.distilled_training = False  # forward returns (class, distillation) logits when training
        if self.num_prefix and not -depth <= class_token_at < depth:
            raise ValueError(f"class_token_at={class_token_at} is not a block index 0..{depth - 1}")
        self.class_token_at = class_token_at % depth if self.num_prefix else 0  # -1: the last block
        self.pos_embed = (pos_embed or Learned1d)(
            embed_dim=embed_dim, grid=self.embed.grid, depth=depth, num_heads=num_heads,
            num_prefix=self.num_prefix if not self.class_token_at else 0,
        )
        if self.class_token_at and type(self.pos_embed).attention is not PositionalEmbedding.attention:
            raise ValueError(f"class_token_at={class_token_at}: {type(self.pos_embed).__name__} acts "
                             "inside attention, whose token count would change at that block; use "
                             "an absolute variant, or class_token_at=0, or pool=mean|seqpool")
        self.seq_pool = SeqPool(embed_dim) if pool == "seqpool" else None
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth grows
        custom = [attention(layer=i, depth=depth, grid=self.embed.grid, dim=embed_dim,
                            num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop_rate,
                            proj_drop=drop_rate)
                  if attention else None for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, r, a)
            for r, a in zip(rates, custom, strict=True)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if distill_token:
            self.head_dist = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if init not in INITS:
            raise ValueError(f"init={init!r} is not one of {', '.join(INITS)}")
        self._init_weights()
        if init == "mimetic":  # over the default: only the attention weights change
            mimetic_init(self.blocks, **(init_args or {}))

    def _init_weights(self):
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)  # as timm
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("embed."):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():  # options that start from a chosen state (GPSA: local heads)
            if hasattr(m, "local_init"):
                m.local_init()

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay beyond norms and biases (ndim <= 1):
        the class and distillation tokens and every positional table."""
        names = {f"pos_embed.{n}" for n, _ in self.pos_embed.named_parameters()}
        tokens = {n for n in ("cls_token", "dist_token") if getattr(self, n) is not None}
        return names | tokens

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups as timm's VisionTransformer names them (for timm's layer-wise lr decay):
        embeddings first, then one per block, the final norm with the last block; the head,
        unmatched, comes last."""
        return dict(stem=r"^cls_token|^dist_token|^pos_embed|^embed",
                    blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None):
        """Embedded tokens with class token and stem positions, and the token grid. `keep`
        (B, n): only those patches, by raster index (MAE's visible ones; pos_embed/base.py)."""
        x, grid = self.embed(x)
        if keep is not None:
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        if self.cls_token is not None and not self.class_token_at:
            x = self._with_class_token(x)
        return self.pos_drop(self.pos_embed.add(x, grid, 0, keep)), grid

    def _with_class_token(self, x: torch.Tensor) -> torch.Tensor:
        prefix = [t for t in (self.cls_token, self.dist_token) if t is not None]
        return torch.cat([t.expand(x.shape[0], -1, -1).to(x.dtype) for t in prefix] + [x], dim=1)

    def set_distilled_training(self, enable: bool = True) -> None:
        """Return both heads' logits while training (timm's name): what distillation trains."""
        self.distilled_training = enable

    def positioned(self, x: torch.Tensor, grid: tuple[int, int], layer: int,
                   keep: torch.Tensor | None = None):
        """The input of block `layer` with its absolute positions added (block 0's were added
        at the stem) and, at `class_token_at`, the class token; and what its attention needs
        from the positional variant."""
        if layer:
            x = self.pos_embed.add(x, grid, layer, keep)
            if layer == self.class_token_at:
                x = self._with_class_token(x)
        return x, self.pos_embed.attention(grid, layer, keep)

    def _encode(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x, grid = self.tokens(x, keep)
        for i, block in enumerate(self.blocks):
            x, pos = self.positioned(x, grid, i, keep)
            x = block(x, pos)
        return x

    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised tokens (B, prefix + patches, D); with `keep`, of those patches only."""
        return self.norm(self._encode(x, keep))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.dist_token is not None:  # the two heads' mean, as in evaluation
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        if self.pool == "cls":
            x = x[:, 0]
        elif self.seq_pool is not None:
            x = self.seq_pool(x)
        else:
            x = x.mean(dim=1)  # no prefix tokens: only pool=cls has a class token
        return self.head(x)

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class head, distillation head) logits of a model with `distill_token`, in any mode."""
        x = self.norm(self._encode(x)[:, :2])  # LayerNorm acts per token: only the two read
        return self.head(x[:, 0]), self.head_dist(x[:, 1])

    def forward(self, x: torch.Tensor):
        if self.dist_token is not None:
            cls, dist = self.forward_heads(x)
            return (cls, dist) if self.distilled_training and self.training else (cls + dist) / 2
        x = self._encode(x)
        if self.pool == "cls":  # LayerNorm acts per token: normalise only the one pooled
            return self.head(self.norm(x[:, 0]))
        return self.forward_head(self.norm(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Softmax attention (B, H, N, N) of every block, for analysis (rollout, distances)."""
        x, grid = self.tokens(x)
        maps = []
        for i, block in enumerate(self.blocks):
            x, pos = self.positioned(x, grid, i)
            maps.append(block.attn.attention_logits(block.norm1(x), pos).softmax(dim=-1))
            x = block(x, pos)
        return maps
