"""Intent classifier: a chatbot's utterances as bag-of-words vectors, an MLP with dropout.

    python examples/intent_classifier.py [--epochs 40] [--out runs/intent_classifier_py]

examples/intents.csv holds 104 training phrasings of 8 intents (greeting, goodbye,
thanks, hours, location, menu, order_status, help), 16 for validation and 32 held-out
phrasings for the test. The vocabulary comes from the training phrasings only.
"""

import argparse
from pathlib import Path

import torch
from torch import nn

import purestep as ps
from purestep.data import Batches
from purestep.data.text import bag_of_words, text
from purestep.models import mlp
from purestep.train import evaluate, fit, make_metrics
from purestep.train.plots import plot_confusion_matrix

parser = argparse.ArgumentParser(description="a bag-of-words intent classifier")
parser.add_argument("--epochs", type=int, default=40)
parser.add_argument("--out", default="runs/intent_classifier_py")
args = parser.parse_args()

path = str(Path(__file__).with_name("intents.csv"))
train, val, test = (text(s, path=path, label_column="intent") for s in ("train", "val", "test"))
vocabulary, intents = train.info["vocabulary"], train.classes
print(f"{len(train)} phrasings, {len(vocabulary)} words, intents: {', '.join(intents)}")

model = mlp(in_features=len(vocabulary), hidden=(32,), out_features=len(intents), dropout=0.3)
opt = ps.optim.adam(lr=1e-2)
metrics = make_metrics(["accuracy", "f1_macro", "confusion_matrix"], "multiclass")
criterion = nn.CrossEntropyLoss()
eval_step = ps.make_eval_step(model, criterion, metrics_fn=metrics.stats)
state, history = fit(
    ps.TrainState.create(model, opt, seed=0),
    ps.make_train_step(model, criterion, opt, metrics_fn=metrics.stats),
    Batches(train.data, 16, seed=0),
    epochs=args.epochs,
    eval_step=eval_step,
    val_data=Batches(val.data, 64, shuffle=False),
    metrics=metrics,
)
result = evaluate(state, eval_step, Batches(test.data, 64, shuffle=False), metrics)
print(f"held-out phrasings: accuracy {result['accuracy']:.4f}, f1 {result['f1_macro']:.4f}")
plot_confusion_matrix(
    result["confusion_matrix"], Path(args.out) / "confusion_matrix.png", labels=intents
)

# New sentences through the same vocabulary (eval mode: dropout off).
ps.load_state_into(model, state).eval()
for sentence in ["see you later", "what time do you open on friday", "where is my parcel"]:
    with torch.no_grad():
        probs = torch.softmax(model(bag_of_words([sentence], vocabulary)), dim=1)[0]
    p, k = probs.max(0)
    print(f"{sentence!r} -> {intents[int(k)]} ({float(p):.2f})")
