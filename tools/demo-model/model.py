"""Two small decoders whose module paths are Hugging Face's, so their ONNX node names match Optimum exports.

`LlamaForCausalLM`: RMSNorm, rotary positions, SiLU-gated MLP (`model.layers.N.mlp.{gate,up,down}_proj`).
`GPT2LMHeadModel`: LayerNorm, learned positions, GELU MLP with Conv1D weights (`transformer.h.N.mlp.c_fc/c_proj`),
tied embeddings. Both take and return Optimum's KV-cache interface; an empty past (length 0) is the first step.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

NEG = -1e9


@dataclass
class Config:
    arch: str = "llama"          # "llama" or "gpt2"
    vocab_size: int = 4096
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 6
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    bos_token_id: int = 0
    eos_token_id: int = 0

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads


def attention_bias(attention_mask, past_len, q_len, dtype):
    """Additive mask [B, 1, q, past+q]: causal by slot, and padded slots (mask 0) never attended."""
    total = past_len + q_len
    key_idx = torch.arange(total, device=attention_mask.device).unsqueeze(0)
    query_idx = torch.arange(q_len, device=attention_mask.device).unsqueeze(1) + past_len
    causal = key_idx <= query_idx
    allowed = causal.unsqueeze(0).unsqueeze(0) & attention_mask[:, None, None, :].bool()
    return torch.where(allowed, torch.zeros((), dtype=dtype), torch.full((), NEG, dtype=dtype))


def attend(q, k, v, bias):
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores + bias.to(scores.dtype)
    return torch.matmul(torch.softmax(scores, dim=-1), v)


# ---------------------------------------------------------------- LLaMA

class LlamaRMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        # No dtype casts: the residual stream is fp32 even under autocast, and onnxruntime's optimizer breaks
        # graphs where a no-op Cast feeds both the norm and the residual add.
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids):
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, bias, past_k, past_v):
        b, t, _ = x.shape
        h, hd = self.cfg.num_attention_heads, self.cfg.head_dim
        q = self.q_proj(x).view(b, t, h, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, h, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, h, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = torch.cat((past_k, k), dim=2)
        v = torch.cat((past_v, v), dim=2)
        out = attend(q, k, v, bias).transpose(1, 2).reshape(b, t, h * hd)
        return self.o_proj(out), k, v


class LlamaMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.norm_eps)

    def forward(self, x, cos, sin, bias, past_k, past_v):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, bias, past_k, past_v)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k, v


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = LlamaRMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(cfg)

    def forward(self, input_ids, attention_mask, position_ids, past):
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(position_ids)
        bias = attention_bias(attention_mask, past[0][0].shape[2], input_ids.shape[1], x.dtype)
        present = []
        for layer, (pk, pv) in zip(self.layers, past):
            x, k, v = layer(x, cos, sin, bias, pk, pv)
            present.append((k, v))
        return self.norm(x), present


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, input_ids, attention_mask, position_ids, past):
        hidden, present = self.model(input_ids, attention_mask, position_ids, past)
        return self.lm_head(hidden), present


# ---------------------------------------------------------------- GPT-2

class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored [in, out], so a neuron's value vector is a row of c_proj."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


class GELUActivation(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.c_attn = Conv1D(3 * cfg.hidden_size, cfg.hidden_size)
        self.c_proj = Conv1D(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, bias, past_k, past_v):
        b, t, d = x.shape
        h, hd = self.cfg.num_attention_heads, self.cfg.head_dim
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, h, hd).transpose(1, 2) for z in (q, k, v))
        k = torch.cat((past_k, k), dim=2)
        v = torch.cat((past_v, v), dim=2)
        out = attend(q, k, v, bias).transpose(1, 2).reshape(b, t, d)
        return self.c_proj(out), k, v


class GPT2MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = Conv1D(cfg.intermediate_size, cfg.hidden_size)
        self.c_proj = Conv1D(cfg.hidden_size, cfg.intermediate_size)
        self.act = GELUActivation()

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x, bias, past_k, past_v):
        a, k, v = self.attn(self.ln_1(x), bias, past_k, past_v)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, k, v


class GPT2Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.h = nn.ModuleList([GPT2Block(cfg) for _ in range(cfg.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def forward(self, input_ids, attention_mask, position_ids, past):
        x = self.wte(input_ids) + self.wpe(position_ids)
        bias = attention_bias(attention_mask, past[0][0].shape[2], input_ids.shape[1], x.dtype)
        present = []
        for block, (pk, pv) in zip(self.h, past):
            x, k, v = block(x, bias, pk, pv)
            present.append((k, v))
        return self.ln_f(x), present


class GPT2LMHeadModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = GPT2Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied

    def forward(self, input_ids, attention_mask, position_ids, past):
        hidden, present = self.transformer(input_ids, attention_mask, position_ids, past)
        return self.lm_head(hidden), present


def build(cfg):
    torch.manual_seed(1234)
    model = LlamaForCausalLM(cfg) if cfg.arch == "llama" else GPT2LMHeadModel(cfg)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            nn.init.normal_(p, std=0.02)
        if name.endswith(("down_proj.weight", "o_proj.weight", "c_proj.weight")):
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.num_hidden_layers))
    return model


def empty_past(cfg, batch, dtype=torch.float32):
    shape = (batch, cfg.num_attention_heads, 0, cfg.head_dim)
    return [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(cfg.num_hidden_layers)]


def forward_full(model, input_ids):
    """Training/eval forward on unpadded [B, T] tokens with no past."""
    b, t = input_ids.shape
    dev = input_ids.device
    mask = torch.ones(b, t, dtype=torch.long, device=dev)
    pos = torch.arange(t, device=dev).unsqueeze(0).expand(b, t)
    past = [(k.to(dev), v.to(dev)) for k, v in empty_past(model.cfg, b)]
    logits, _ = model(input_ids, mask, pos, past)
    return logits
