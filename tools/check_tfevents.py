#!/usr/bin/env python3
"""check_tfevents.py — reads the TensorBoard event files `dsv3 train --tensorboard DIR` wrote with
tensorboard's own event reader (tensorboard.backend.event_processing.event_accumulator) and checks
that its scalars equal the run's train_log.jsonl (as float32, TensorBoard's simple_value type).

    python3 tools/check_tfevents.py RUN TBDIR

Checks every numeric field of every step record (tag train/<key>) and validation record (val/<key>,
the val_ prefix dropped), and MaxVio / busiest-expert share per MoE layer computed here from the
logged loads.  Prints one line per tag kind and "ok"; exits 1 on any mismatch.
Needs the `tensorboard` package (pip install tensorboard).
"""
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main():
    run, tb = sys.argv[1], sys.argv[2]
    expect = {}  # tag -> {step: value}
    for line in open(os.path.join(run, "train_log.jsonl")):
        rec = json.loads(line)
        if not isinstance(rec.get("step"), int):
            continue
        val = "val_loss" in rec
        for k, v in rec.items():
            if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            name = k[4:] if val and k.startswith("val_") else k
            expect.setdefault(("val/" if val else "train/") + name, {})[rec["step"]] = v
        for i, load in enumerate(rec.get("load", [])):
            s = sum(load)
            if s > 0:
                expect.setdefault(f"routing/maxvio/moe{i}", {})[rec["step"]] = max(load) / (s / len(load)) - 1
                expect.setdefault(f"routing/busiest_share/moe{i}", {})[rec["step"]] = max(load) / s
    acc = event_accumulator.EventAccumulator(tb, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    bad = 0
    if tags != set(expect):
        print("tags differ: only in the events:", sorted(tags - set(expect)), "only in the log:",
              sorted(set(expect) - tags))
        bad += 1
    n = 0
    for tag in sorted(tags & set(expect)):
        got = {e.step: e.value for e in acc.Scalars(tag)}
        if set(got) != set(expect[tag]):
            print(f"{tag}: steps differ")
            bad += 1
            continue
        for step, v in expect[tag].items():
            n += 1
            if got[step] != f32(v):
                print(f"{tag} step {step}: events {got[step]!r}, log {v!r} (float32 {f32(v)!r})")
                bad += 1
    print(f"{len(tags)} tags, {n} scalars compared with {run}/train_log.jsonl: {'ok' if not bad else 'MISMATCH'}")
    sys.exit(1 if bad else 0)


main()
