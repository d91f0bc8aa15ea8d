"""Reference attention: the appearance encoder's features fed to the denoising UNet.

MagicAnimate conditions the denoising UNet on the reference image through its self-attention
(the paper's "appearance encoder", a reference-only style control):

* the appearance encoder (a UNet2D) runs on the clean reference latents; in each spatial
  ``BasicTransformerBlock`` of its mid and up blocks we record the input of ``attn1``, which is
  the block's ``norm1`` output (the *bank*);
* in the same blocks of the denoising UNet, ``attn1`` of the conditional guidance half attends
  over ``[own tokens ; reference tokens]``, keys and values both projected by the denoising UNet's
  own ``to_k``/``to_v``; the unconditional half keeps plain self-attention.

Several reference images (``animate --extra-reference``, an extension: the published weights were
trained with one) are encoded in one batch and each block's bank entry is the token-axis
concatenation of their features in the order given: the guided rows attend over
``[own ; ref1 ; ref2 ; ...]``. With one reference this is exactly the single-reference bank.

Both sides are diffusers attention processors, so the stock blocks run unchanged.

Numerics kept from the official implementation (``official-inference.md`` §4, §14.2): the banked
features are rounded through float16 even in a float32 run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

# Only the spatial transformer blocks of the mid and up blocks take part ("midup" fusion).
_FUSION_PREFIXES = ("mid_block.attentions.", "up_blocks.")


def fusion_attn1_names(model: torch.nn.Module) -> list[str]:
    """Names (``...attn1``) of the spatial self-attention modules that share reference features.

    Motion modules also contain ``attn1`` modules; they are temporal and never take part.
    """
    names = []
    for name, _ in model.named_modules():
        if not name.endswith(".attn1") or ".motion_modules." in name:
            continue
        if name.startswith(_FUSION_PREFIXES) and ".attentions." in name:
            names.append(name)
    return names


class ReferenceBank:
    """The reference features of one denoising step, keyed by block name (one row each: the
    ``references`` images' tokens one after the other).

    ``armed`` is set by the pipeline while a step's features are expected: a reader that then finds
    none raises (its writer was replaced) instead of silently attending without them.
    ``keys_values`` caches each block's projected reference keys and values (fast path only).
    ``stop_after`` names the last writer: the appearance encoder stops there (``BankFilled``),
    since nothing it computes afterwards is read.
    """

    def __init__(self) -> None:
        self.features: dict[str, torch.Tensor] = {}
        self.keys_values: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.armed = False
        self.stop_after: str | None = None
        self.references = 1  # images encoded per step: the last this many rows of the encoder's batch

    def clear(self) -> None:
        self.features.clear()
        self.keys_values.clear()
        self.armed = False


class BankFilled(Exception):
    """Raised by the last writer: the appearance encoder's remaining layers feed nothing."""


class MissingReferenceError(RuntimeError):
    """A reader expected reference features for its block and found none."""


class ReferenceAttentionError(ValueError):
    """An attention processor change would replace the reference or temporal attention."""


def _attention(attn, query_states: torch.Tensor, kv_states: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of ``attn`` (a diffusers ``Attention``) without its output projection."""
    batch = query_states.shape[0]
    query = attn.to_q(query_states)
    key = attn.to_k(kv_states)
    value = attn.to_v(kv_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, key, value)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


def _project_out(attn, hidden_states: torch.Tensor) -> torch.Tensor:
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    return hidden_states / attn.rescale_output_factor


class ReferenceWriterProcessor:
    """On the appearance encoder: store the ``attn1`` input, then run plain self-attention."""

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank = bank
        self.name = name
        self.plain = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        # The official bank is rounded through float16 whatever the run dtype (§14.2). The
        # official encoder runs on two identical rows (its guidance batch) and the conditional
        # half reads the second; with one row the features are that row. With several references
        # the batch is each row's images in turn (the last ``references`` rows are one of each),
        # and their tokens are laid one after the other in one row.
        count = self.bank.references
        features = hidden_states[-count:].to(torch.float16).to(hidden_states.dtype)
        self.bank.features[self.name] = features if count == 1 else features.reshape(1, -1, features.shape[-1])
        if self.name == self.bank.stop_after:
            raise BankFilled
        return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReaderProcessor:
    """On the denoising UNet: the guided rows attend over ``[own tokens ; reference tokens]``.

    ``cond_start`` is the first row of the batch that receives the reference (rows are
    ``(guidance half, frame)``; with classifier-free guidance the second half, otherwise 0).

    The default computation is the official one: keys and values of ``[own ; reference]`` are
    projected together for every guided row. With ``fast`` the reference keys and values are
    projected once per step and block and shared by every row and window, and the query, key and
    value projections of both halves run as one matrix product: the same mathematics with other
    matrix shapes, so the result moves by rounding only (within the parity contract).
    """

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank = bank
        self.name = name
        self.cond_start = 0
        self.fast = False
        self.plain = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        reference = self.bank.features.get(self.name)
        if reference is None:
            if self.bank.armed:
                raise MissingReferenceError(
                    f"{self.name}: no reference features for this block; the appearance encoder's attention "
                    "processor was replaced (reload the pipeline)"
                )
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if self.fast:
            return self._fast(attn, hidden_states, reference)
        start = self.cond_start
        cond = hidden_states[start:]
        reference = reference.to(cond.dtype).expand(cond.shape[0], -1, -1)
        guided = _attention(attn, cond, torch.cat([cond, reference], dim=1))
        if start == 0:
            return _project_out(attn, guided)
        plain = _attention(attn, hidden_states[:start], hidden_states[:start])
        return _project_out(attn, torch.cat([plain, guided], dim=0))

    def project(self, attn) -> None:
        """Project this block's reference keys and values once for the step (``attn``: its module)."""
        reference = self.bank.features[self.name].to(attn.to_k.weight.dtype)
        self.bank.keys_values[self.name] = (attn.to_k(reference), attn.to_v(reference))

    def _fast(self, attn, hidden_states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if self.name not in self.bank.keys_values:
            self.project(attn)
        kv = self.bank.keys_values[self.name]
        batch, start = hidden_states.shape[0], self.cond_start
        heads = attn.heads

        def split(x):  # b n (h d) -> b h n d
            return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)

        query, key, value = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
        ref_key, ref_value = (split(t).expand(batch - start, -1, -1, -1) for t in kv)
        guided = F.scaled_dot_product_attention(
            query[start:], torch.cat([key[start:], ref_key], dim=2), torch.cat([value[start:], ref_value], dim=2)
        )
        if start:
            plain = F.scaled_dot_product_attention(query[:start], key[:start], value[:start])
            guided = torch.cat([plain, guided], dim=0)
        out = guided.transpose(1, 2).reshape(batch, -1, query.shape[1] * query.shape[3]).to(query.dtype)
        return _project_out(attn, out)


def project_reference(bank: ReferenceBank, unet: torch.nn.Module, readers: list[ReferenceReaderProcessor]) -> None:
    """Fill ``bank.keys_values`` for every reader before the step's windows (fast path), so that
    every window, compiled or not, reads the same cached projections."""
    for reader in readers:
        reader.project(unet.get_submodule(reader.name))


def install_reference_attention(
    appearance_encoder: torch.nn.Module, unet: torch.nn.Module
) -> tuple[ReferenceBank, list[ReferenceReaderProcessor]]:
    """Install writer processors on the appearance encoder and readers on the UNet.

    Returns the shared bank and the reader processors (their ``cond_start`` is set per call).
    """
    writer_names = fusion_attn1_names(appearance_encoder)
    reader_names = fusion_attn1_names(unet)
    if writer_names != reader_names:
        raise ValueError(
            "appearance encoder and UNet do not have the same mid/up attention blocks: "
            f"{len(writer_names)} vs {len(reader_names)}"
        )
    bank = ReferenceBank()
    readers = []
    for name in writer_names:
        appearance_encoder.get_submodule(name).set_processor(ReferenceWriterProcessor(bank, name))
        reader = ReferenceReaderProcessor(bank, name)
        unet.get_submodule(name).set_processor(reader)
        readers.append(reader)
        protect_attention(appearance_encoder.get_submodule(name), ReferenceWriterProcessor)
        protect_attention(unet.get_submodule(name), ReferenceReaderProcessor)
    # modules are registered up blocks first, but the mid block runs first
    in_order = sorted(writer_names, key=lambda n: not n.startswith("mid_block."))
    bank.stop_after = in_order[-1] if in_order else None
    guard_model(appearance_encoder)
    guard_model(unet)
    return bank, readers


# Protection: the diffusers calls that swap attention processors (``set_attn_processor``,
# ``set_default_attn_processor``, xformers, slicing, QKV fusion, attention backends) would replace
# the reference writers/readers and the classic temporal attention. They are refused, before
# anything changes, with a ``ReferenceAttentionError``.

_REFUSAL = (
    "{what} would replace MagicAnimate's reference-attention and temporal-attention processors, which "
    "carry the appearance and reproduce the official numerics; it is not supported on this model"
)


class _ProtectedAttention:
    """Mixin put in front of a diffusers ``Attention`` class: only ``allowed_processor`` may be set."""

    allowed_processor: type

    def set_processor(self, processor) -> None:
        if type(processor) is not self.allowed_processor:
            raise ReferenceAttentionError(_REFUSAL.format(what=f"setting {type(processor).__name__}"))
        super().set_processor(processor)

    def fuse_projections(self, fuse=True):
        raise ReferenceAttentionError(_REFUSAL.format(what="QKV fusion"))

    def set_attention_backend(self, backend: str):
        raise ReferenceAttentionError(_REFUSAL.format(what=f"attention backend {backend!r}"))


_PROTECTED_CLASSES: dict[type, type] = {}


def protect_attention(module: torch.nn.Module, allowed_processor: type) -> None:
    """Make ``module`` (a diffusers ``Attention``) refuse every processor but ``allowed_processor``."""
    base = module.__class__
    if issubclass(base, _ProtectedAttention):
        module.allowed_processor = allowed_processor
        return
    if base not in _PROTECTED_CLASSES:
        _PROTECTED_CLASSES[base] = type(f"Protected{base.__name__}", (_ProtectedAttention, base), {})
    module.__class__ = _PROTECTED_CLASSES[base]
    module.allowed_processor = allowed_processor


def protected_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, _ProtectedAttention)}


def check_processors(model: torch.nn.Module) -> None:
    """Raise if a protected module's processor was replaced behind our back (e.g. ``module.processor = ...``)."""
    for name, module in protected_modules(model).items():
        if type(module.processor) is not module.allowed_processor:
            raise ReferenceAttentionError(_REFUSAL.format(what=f"{name}: {type(module.processor).__name__}"))


def guard_model(model: torch.nn.Module) -> None:
    """Model-level processor changes on ``model`` are checked before any module changes."""
    original = model.set_attn_processor

    def set_attn_processor(processor) -> None:
        for name, module in protected_modules(model).items():
            new = processor.get(f"{name}.processor") if isinstance(processor, dict) else processor
            if type(new) is not module.allowed_processor:
                raise ReferenceAttentionError(_REFUSAL.format(what=f"setting {type(new).__name__} on {name}"))
        original(processor)

    def refuse(what: str, off=lambda *a, **k: False):
        def method(*args, **kwargs):
            if off(*args, **kwargs):
                return None  # switching off what was never on
            raise ReferenceAttentionError(_REFUSAL.format(what=what))

        return method

    # instance attributes shadow the model's methods (and the methods that call them)
    model.set_attn_processor = set_attn_processor
    model.set_default_attn_processor = refuse("set_default_attn_processor")
    model.fuse_qkv_projections = refuse("QKV fusion")
    model.set_use_memory_efficient_attention_xformers = refuse("xformers attention", off=lambda valid, *a, **k: not valid)
    model.set_attention_slice = refuse("attention slicing", off=lambda size=None, *a, **k: size is None)
    model.set_attention_backend = refuse("an attention backend")
