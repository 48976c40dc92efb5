"""wav2vec 2.0 losses: InfoNCE over distractors, diversity, and their metrics (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_logits(context: Tensor, targets: Tensor, codes: Tensor, negatives: Tensor,
                       logit_temp: float) -> Tensor:
    """Cosine-similarity logits of each masked frame against its positive and K distractors.

    context [B, M, D] (transformer output at masked frames, projected), targets [B, M, D] (quantized,
    projected, same frames), codes long [B, M, G] (quantizer entries of the targets), negatives long
    [B, M, K] (indices into the M masked frames of the same utterance).
    Returns float32 logits [B, M, K+1]; column 0 is the positive. A distractor whose codes equal the
    positive's is the positive itself for the loss's purposes and gets -inf (fairseq, transformers).

    Instead of gathering [B, M, K, D] distractor vectors (what fairseq and transformers do), all
    pairwise similarities inside an utterance are one batched matmul [B, M, M] (M is at most a few
    hundred) and the K columns are gathered from it: less memory, the same numbers.
    """
    # float32 even under autocast (bmm would drop to bf16/fp16): logits are scaled by 1/logit_temp = 10
    with torch.autocast(device_type=context.device.type, enabled=False):
        c = F.normalize(context.float(), dim=-1)
        t = F.normalize(targets.float(), dim=-1)
        sims = torch.bmm(c, t.transpose(1, 2))  # [B, M, M]
    pos = sims.diagonal(dim1=1, dim2=2)[..., None]  # [B, M, 1]
    neg = sims.gather(2, negatives)  # [B, M, K]
    batch, m, k = negatives.shape
    flat = negatives.reshape(batch, m * k, 1).expand(-1, -1, codes.shape[-1])
    neg_codes = codes.gather(1, flat).view(batch, m, k, codes.shape[-1])
    same = (neg_codes == codes[:, :, None, :]).all(-1)
    neg = neg.masked_fill(same, float("-inf"))
    return torch.cat([pos, neg], dim=-1) / logit_temp


def contrastive_loss(logits: Tensor) -> Tensor:
    """Mean InfoNCE cross-entropy, the positive at index 0. logits [..., K+1] -> scalar.

    lrasr follows fairseq here: the loss is normalised per masked frame (fairseq sums and divides the
    gradient by the number of masked frames); transformers returns the plain sum.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    target = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
    return F.cross_entropy(flat, target, reduction="mean")


def contrastive_accuracy(logits: Tensor) -> float:
    """Fraction of masked frames whose positive scores highest (ties with all-equal rows count wrong,
    as in fairseq)."""
    flat = logits.detach().reshape(-1, logits.shape[-1])
    if flat.numel() == 0:
        return 0.0
    best = flat.argmax(-1) == 0
    flat_row = flat.argmax(-1) == flat.argmin(-1)
    return float((best & ~flat_row).float().mean())


def diversity_loss(prob_perplexity: Tensor, num_entries: int) -> Tensor:
    """(G*V - perplexity of the batch-averaged softmax) / (G*V): 0 when all entries are used equally."""
    return (num_entries - prob_perplexity) / num_entries
