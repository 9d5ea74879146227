"""A tiny character-level language model: a transformer whose output layer shares the
embedding matrix (tied weights), AdamW without weight decay on biases, LayerNorms and
positions, gradient clipping, and a linear warm-up followed by a cosine decay of the lr.

    python examples/tiny_lm.py [--epochs 30] [--out runs/tiny_lm_py]

(examples/tiny_lm.yaml is the config-file version on synthetic token sequences.)
"""

import argparse

import torch
from torch.func import functional_call

import purestep as ps
from purestep.data import Batches
from purestep.models import tiny_lm
from purestep.optim import schedules
from purestep.train import fit
from purestep.train.build import LOSSES
from purestep.train.plots import plot_history

parser = argparse.ArgumentParser(description="a tiny character-level LM")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--out", default="runs/tiny_lm_py")
args = parser.parse_args()

TEXT = (
    "a pure step takes a state and a batch and returns a new state. nothing changes in "
    "place, so the same state and the same batch give the same new state, every time. "
    "the learning rate lives in the state, so a schedule never recompiles the step. "
)
chars = sorted(set(TEXT))
ids = torch.tensor([chars.index(c) for c in TEXT])
seq = 32  # every window of 32 characters predicts the next character at each position
x = torch.stack([ids[i : i + seq] for i in range(len(ids) - seq)])
y = torch.stack([ids[i + 1 : i + seq + 1] for i in range(len(ids) - seq)])
data = Batches((x, y), 32, seed=0)

model = tiny_lm(vocab=len(chars), d_model=64, heads=4, seq=seq, layers=2, dropout=0.1)
steps = args.epochs * len(data)
warmup = max(1, steps // 10)
lr = schedules.sequential_lr(
    [schedules.linear_lr(0.01, 1.0, warmup), schedules.cosine_annealing_lr(steps - warmup)],
    milestones=[warmup],
)
no_decay = [{"params": "bias|ln|pos", "weight_decay": 0.0}]
adamw = ps.optim.param_groups(ps.optim.adamw, no_decay, lr=1e-2, weight_decay=0.1)
opt = ps.optim.chain(ps.optim.clip_by_global_norm(1.0), ps.optim.scheduled(adamw, lr))
lm_loss = LOSSES["lm_cross_entropy"]()  # cross-entropy over every position

step = ps.make_train_step(model, lm_loss, opt)
state, history = fit(ps.TrainState.create(model, opt, seed=0), step, data, epochs=args.epochs)
plot_history(history.records, args.out)  # loss.png, lr.png (the warm-up, then the cosine)

# Greedy generation from a prompt with the trained weights (eval mode: no dropout).
model.eval()
out = [chars.index(c) for c in "a pure step "]
with torch.no_grad():
    for _ in range(80):
        logits = functional_call(model, state.params, (torch.tensor([out[-seq:]]),))
        out.append(int(logits[0, -1].argmax()))
sample = "".join(chars[i] for i in out)
print(f"final loss {history.records[-1]['loss']:.4f}; sample: {sample!r}")
