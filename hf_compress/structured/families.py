"""Where the structures of each supported model family live, and how its config describes their sizes.

| family | models | heads / KV groups | MLP neurons | hidden channels | layers |
|---|---|---|---|---|---|
| ``llama`` | Llama, Qwen2 (qkv bias), Mistral (``*ForCausalLM``, ``*ForSequenceClassification``, ``*Model``) | yes, independently of the hidden size (explicit ``head_dim``); whole KV groups and/or the same number of query heads in every group | yes (gate/up/down) | yes | yes (exact when ``o_proj`` and ``down_proj`` are zero) |
| ``gpt2`` | GPT-2 (``GPT2LMHeadModel``, ``GPT2Model``, ``GPT2ForSequenceClassification``) | only together with hidden channels in proportion (``head_dim = n_embd / n_head`` is derived) | yes (``c_fc``/``c_proj`` Conv1D) | yes | yes (exact when both ``c_proj`` are zero) |
| ``bert`` | BERT / MiniLM (``BertModel``, ``BertForSequenceClassification``) | only together with hidden channels in proportion | yes (intermediate/output) | yes | yes, named explicitly (post-norm: a zeroed layer is not the identity) |

Removing hidden channels changes what the norms compute (their statistics run over fewer channels); RMSNorm weights
are rescaled by ``sqrt(H / H')``, which is exact up to ``eps``; LayerNorm is not, so recover with distillation.
On the RMSNorm family with untied embeddings, pruning first rotates the residual stream onto its principal axes
(:mod:`hf_compress.structured.rotation`, ``StructuredPruningConfig.hidden_rotation``), so the channels that go are
the directions that carry the least; GPT-2 and BERT (LayerNorm) and tied models cut the original channels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from hf_compress.distributed import unwrap_model
from hf_compress.targets import in_out_features, is_linear

SUPPORTED = {
    "llama": ("llama", "qwen2", "mistral"),
    "gpt2": ("gpt2",),
    "bert": ("bert",),
}


@dataclass
class LayerParts:
    """One decoder/encoder layer: the modules each structure runs through."""

    layer: nn.Module
    attention: nn.Module  # the module holding the head-count attributes
    q: nn.Module | None
    k: nn.Module | None
    v: nn.Module | None
    qkv: nn.Module | None  # GPT-2's fused c_attn
    o: nn.Module
    mlp_inputs: list[nn.Module]  # gate/up, c_fc, intermediate.dense
    mlp_output: nn.Module  # down, c_proj, output.dense
    norms: list[nn.Module] = field(default_factory=list)

    @property
    def readers(self) -> list[nn.Module]:
        attention = [self.qkv] if self.qkv is not None else [self.q, self.k, self.v]
        return attention + self.mlp_inputs

    @property
    def writers(self) -> list[nn.Module]:
        return [self.o, self.mlp_output]


@dataclass(frozen=True)
class Shape:
    """The sizes a stock config records: uniform across layers."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    hidden: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Family(ABC):
    """Accessors for one family; subclasses name the modules."""

    name = ""
    explicit_head_dim = True
    pre_norm = True
    rms_norm = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config

    # ------------------------------------------------------------ modules
    def body(self) -> nn.Module:
        return self.model.base_model

    @abstractmethod
    def layer_list(self) -> nn.ModuleList: ...

    @abstractmethod
    def set_layer_list(self, layers: nn.ModuleList) -> None: ...

    @abstractmethod
    def layer_parts(self, layer: nn.Module) -> LayerParts: ...

    @abstractmethod
    def embeddings(self) -> list[nn.Embedding]: ...

    @abstractmethod
    def other_norms(self) -> list[nn.Module]: ...

    def head_readers(self) -> list[nn.Module]:
        """Linear layers outside the layers that read the hidden state (LM head, score, pooler, classifier)."""
        body = self.body()
        inside = {id(m) for m in body.modules()}
        hidden = self.shape().hidden
        getter = getattr(self.model, "get_output_embeddings", None)
        output_embeddings = getter() if callable(getter) else None
        readers = []
        for name, module in self.model.named_modules():
            if is_linear(module) and id(module) not in inside:
                in_features, out_features = in_out_features(module)
                if in_features == hidden:
                    readers.append(module)
                if out_features == hidden and in_features == hidden and module is not output_embeddings:
                    raise ValueError(
                        f"shrink: {type(self.model).__name__} has a head module {name!r} that writes the hidden "
                        "size; hidden channels cannot be removed from this model class (heads, neurons and layers "
                        "can)"
                    )
        return readers

    @abstractmethod
    def shape(self) -> Shape: ...

    def set_shape(self, shape: Shape, kept_layers: list[int]) -> None:
        """Update the config and the attributes modules keep of their sizes."""
        self.write_config(self.config, shape, kept_layers)
        self.update_modules(shape)

    @abstractmethod
    def write_config(self, config, shape: Shape, kept_layers: list[int] | None = None) -> None: ...

    @abstractmethod
    def update_modules(self, shape: Shape) -> None: ...

    def config_for(self, shape: Shape):
        """A copy of the model's config describing ``shape`` (the last layers dropped, for counting only)."""
        import copy

        config = copy.deepcopy(self.config)
        self.write_config(config, shape, list(range(shape.num_layers)))
        return config

    def parameters_of(self, shape: Shape) -> int:
        """Parameters of the model class at ``shape`` (built on the meta device, tied weights once)."""
        with torch.device("meta"):
            model = type(self.model)(self.config_for(shape))
        return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

    def activation_is_zero_at_zero(self) -> bool:
        name = getattr(self.config, "hidden_act", None) or getattr(self.config, "activation_function", "gelu")
        from transformers.activations import ACT2FN

        return float(ACT2FN[name](torch.zeros(1))[0]) == 0.0


class LlamaFamily(Family):
    name = "llama"

    def layer_list(self) -> nn.ModuleList:
        return self.body().layers

    def set_layer_list(self, layers: nn.ModuleList) -> None:
        self.body().layers = layers

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        attention, mlp = layer.self_attn, layer.mlp
        return LayerParts(
            layer=layer,
            attention=attention,
            q=attention.q_proj,
            k=attention.k_proj,
            v=attention.v_proj,
            qkv=None,
            o=attention.o_proj,
            mlp_inputs=[mlp.gate_proj, mlp.up_proj],
            mlp_output=mlp.down_proj,
            norms=[layer.input_layernorm, layer.post_attention_layernorm],
        )

    def embeddings(self) -> list[nn.Embedding]:
        return [self.body().embed_tokens]

    def other_norms(self) -> list[nn.Module]:
        return [self.body().norm]

    def shape(self) -> Shape:
        c = self.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        return Shape(c.num_hidden_layers, c.num_attention_heads, kv, head_dim, c.intermediate_size, c.hidden_size)

    def write_config(self, c, shape: Shape, kept_layers: list[int] | None = None) -> None:
        c.num_hidden_layers = shape.num_layers
        c.num_attention_heads = shape.num_heads
        c.num_key_value_heads = shape.num_kv_heads
        c.head_dim = shape.head_dim
        c.intermediate_size = shape.intermediate
        c.hidden_size = shape.hidden
        layer_types = getattr(c, "layer_types", None)
        if isinstance(layer_types, list) and kept_layers is not None and len(layer_types) > max(kept_layers):
            c.layer_types = [layer_types[i] for i in kept_layers]

    def update_modules(self, shape: Shape) -> None:
        for new_index, layer in enumerate(self.layer_list()):
            attention = layer.self_attn
            attention.layer_idx = new_index
            attention.num_key_value_groups = shape.num_heads // shape.num_kv_heads
            if hasattr(layer, "layer_idx"):
                layer.layer_idx = new_index


class GPT2Family(Family):
    name = "gpt2"
    explicit_head_dim = False
    rms_norm = False

    def layer_list(self) -> nn.ModuleList:
        return self.body().h

    def set_layer_list(self, layers: nn.ModuleList) -> None:
        self.body().h = layers

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        if hasattr(layer, "crossattention"):
            raise ValueError("shrink: GPT-2 with cross-attention (add_cross_attention=True) is not supported")
        return LayerParts(
            layer=layer,
            attention=layer.attn,
            q=None,
            k=None,
            v=None,
            qkv=layer.attn.c_attn,
            o=layer.attn.c_proj,
            mlp_inputs=[layer.mlp.c_fc],
            mlp_output=layer.mlp.c_proj,
            norms=[layer.ln_1, layer.ln_2],
        )

    def embeddings(self) -> list[nn.Embedding]:
        return [self.body().wte, self.body().wpe]

    def other_norms(self) -> list[nn.Module]:
        return [self.body().ln_f]

    def shape(self) -> Shape:
        c = self.config
        inner = c.n_inner if c.n_inner is not None else 4 * c.n_embd
        return Shape(c.n_layer, c.n_head, c.n_head, c.n_embd // c.n_head, inner, c.n_embd)

    def write_config(self, c, shape: Shape, kept_layers: list[int] | None = None) -> None:
        c.n_layer, c.n_head, c.n_inner, c.n_embd = shape.num_layers, shape.num_heads, shape.intermediate, shape.hidden

    def update_modules(self, shape: Shape) -> None:
        for new_index, layer in enumerate(self.layer_list()):
            attention = layer.attn
            attention.embed_dim = attention.split_size = shape.hidden
            attention.num_heads = shape.num_heads
            attention.layer_idx = new_index


class BertFamily(Family):
    name = "bert"
    explicit_head_dim = False
    pre_norm = False
    rms_norm = False

    def layer_list(self) -> nn.ModuleList:
        return self.body().encoder.layer

    def set_layer_list(self, layers: nn.ModuleList) -> None:
        self.body().encoder.layer = layers

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        attention = layer.attention
        return LayerParts(
            layer=layer,
            attention=attention.self,
            q=attention.self.query,
            k=attention.self.key,
            v=attention.self.value,
            qkv=None,
            o=attention.output.dense,
            mlp_inputs=[layer.intermediate.dense],
            mlp_output=layer.output.dense,
            norms=[attention.output.LayerNorm, layer.output.LayerNorm],
        )

    def embeddings(self) -> list[nn.Embedding]:
        embeddings = self.body().embeddings
        found = [embeddings.word_embeddings, embeddings.position_embeddings]
        if getattr(embeddings, "token_type_embeddings", None) is not None:
            found.append(embeddings.token_type_embeddings)
        return found

    def other_norms(self) -> list[nn.Module]:
        return [self.body().embeddings.LayerNorm]

    def head_readers(self) -> list[nn.Module]:
        pooler = getattr(self.body(), "pooler", None)
        return super().head_readers() + ([pooler.dense] if pooler is not None else [])

    def pooler_output(self) -> nn.Module | None:
        pooler = getattr(self.body(), "pooler", None)
        return pooler.dense if pooler is not None else None

    def shape(self) -> Shape:
        c = self.config
        heads = c.num_attention_heads
        return Shape(c.num_hidden_layers, heads, heads, c.hidden_size // heads, c.intermediate_size, c.hidden_size)

    def write_config(self, c, shape: Shape, kept_layers: list[int] | None = None) -> None:
        c.num_hidden_layers, c.num_attention_heads = shape.num_layers, shape.num_heads
        c.intermediate_size, c.hidden_size = shape.intermediate, shape.hidden

    def update_modules(self, shape: Shape) -> None:
        for new_index, layer in enumerate(self.layer_list()):
            attention = layer.attention.self
            attention.num_attention_heads = shape.num_heads
            attention.all_head_size = shape.num_heads * shape.head_dim
            attention.layer_idx = new_index


FAMILY_CLASSES = {"llama": LlamaFamily, "gpt2": GPT2Family, "bert": BertFamily}


def supported_text() -> str:
    return "; ".join(f"{family}: model_type {', '.join(types)}" for family, types in SUPPORTED.items())


def family_of(model: nn.Module) -> Family:
    """The family adapter of ``model`` (wrappers looked through).

    Raises:
        ValueError: naming the model class and the supported families, for a model hf-compress cannot shrink.
    """
    model = unwrap_model(model)
    from hf_compress.peft_support.modules import peft_body

    if peft_body(model) is not None:
        raise ValueError(
            f"structured pruning does not support PEFT models ({type(model).__name__}): shrinking would change the "
            "base weights under the adapters. Merge first (hf_compress.merge_and_unload(model)), then shrink"
        )
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for family, types in SUPPORTED.items():
        if model_type in types:
            adapter = FAMILY_CLASSES[family](model)
            layers = _layer_list_or_none(adapter)
            if not isinstance(layers, nn.ModuleList):
                raise ValueError(
                    f"structured pruning: the layers of {type(model).__name__} are not a plain nn.ModuleList "
                    f"(found {type(layers).__name__}); depth and width pruning need one"
                )
            return adapter
    raise ValueError(
        f"structured pruning cannot shrink {type(model).__name__} (model_type {model_type!r}); supported families: "
        f"{supported_text()}"
    )


def _layer_list_or_none(adapter: Family):
    try:
        return adapter.layer_list()
    except AttributeError:
        return None
