"""Gumbel-softmax product quantizer (wav2vec 2.0's Z -> Q).

G groups of V learned codevectors; each frame picks one entry per group and the G picks are
concatenated. Parameter names and shapes match transformers (``codevectors`` [1, G*V, d/G],
``weight_proj``), which are fairseq's ``vars``/``weight_proj`` renamed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    vectors: Tensor  # [N, codevector_dim]
    codes: Tensor  # long [N, G], the entry used per group (the Gumbel pick in training, argmax in eval)
    prob_perplexity: Tensor  # scalar: perplexity of the batch-averaged softmax, summed over groups
    code_perplexity: Tensor  # scalar: perplexity of the batch's argmax histogram, summed over groups


def _perplexity(probs: Tensor) -> Tensor:
    """probs [G, V] (a distribution per group) -> sum over groups of exp(entropy)."""
    # exact entropy (xlogy); fairseq adds 1e-7 inside the log, transformers uses xlogy too
    return torch.exp(-torch.xlogy(probs, probs).sum(-1)).sum()


class GumbelQuantizer(nn.Module):
    def __init__(self, in_dim: int, num_groups: int, num_vars: int, codevector_dim: int,
                 temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)):
        super().__init__()
        self.num_groups = num_groups
        self.num_vars = num_vars
        self.codevectors = nn.Parameter(torch.empty(1, num_groups * num_vars, codevector_dim // num_groups))
        self.weight_proj = nn.Linear(in_dim, num_groups * num_vars)
        self.temp_start, self.temp_floor, self.temp_decay = temperature
        self.temperature = self.temp_start
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # fairseq: logits start near N(0, in_dim) so the first Gumbel samples are diverse
        nn.init.uniform_(self.codevectors)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    def set_num_updates(self, step: int) -> float:
        """Temperature max(start * decay**step, floor); returns it."""
        self.temperature = max(self.temp_start * self.temp_decay ** step, self.temp_floor)
        return self.temperature

    def forward(self, x: Tensor) -> QuantizerOutput:
        """x [N, in_dim] -> QuantizerOutput (vectors [N, codevector_dim]).

        Training: a Gumbel-softmax sample at ``self.temperature``, hard one-hot forward with the soft
        sample's gradient (straight-through). Eval: the argmax entry, deterministic.
        """
        n = x.shape[0]
        logits = self.weight_proj(x).float().view(n, self.num_groups, self.num_vars)
        codes = logits.argmax(-1)  # [N, G]
        soft = logits.softmax(-1)
        prob_ppl = _perplexity(soft.mean(0))
        with torch.no_grad():
            hist = torch.zeros(self.num_groups, self.num_vars, device=x.device)
            hist.scatter_add_(1, codes.t(), torch.ones_like(codes.t(), dtype=hist.dtype))
            code_ppl = _perplexity(hist / max(n, 1))
        book = self.codevectors.view(self.num_groups, self.num_vars, -1)  # [G, V, d/G]
        if self.training:
            gumbels = -torch.empty_like(logits).exponential_().log()
            y_soft = ((logits + gumbels) / self.temperature).softmax(-1)
            picked = y_soft.argmax(-1)
            y_hard = torch.zeros_like(y_soft).scatter_(-1, picked[..., None], 1.0)
            codes = picked  # the entries actually used as targets
            probs = (y_hard - y_soft.detach() + y_soft).to(book.dtype)
            # [G, N, V] @ [G, V, d/G]: no [N, G, V, d/G] intermediate (transformers builds that)
            vectors = torch.bmm(probs.transpose(0, 1), book).transpose(0, 1).reshape(n, book.shape[0] * book.shape[2])
        else:
            # eval: the argmax codevector (a gather, same values as one-hot @ codebook)
            flat = codes + torch.arange(self.num_groups, device=x.device)[None, :] * self.num_vars
            vectors = self.codevectors[0][flat].reshape(n, book.shape[0] * book.shape[2])
        return QuantizerOutput(vectors, codes, prob_ppl, code_ppl)
