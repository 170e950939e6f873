#!/usr/bin/env python3
"""make_tfevents_fixture.py — a TensorBoard event file written by tensorboard's own writer, for
tests/test_tfevents.c (dsv3's hand-written TFRecord + Event protobuf encoder must give the same bytes).

    python3 tools/make_tfevents_fixture.py [OUT_DIR]      (default tests/fixtures/tfevents)

Writes:
  ref.tfevents   records framed by tensorboard.summary.writer.record_writer.RecordWriter (length,
                 masked CRC-32C of the length, data, masked CRC-32C of the data), each an
                 event_pb2.Event serialized by protobuf: first the file_version "brain.Event:2"
                 record, then one scalar Summary per row of EVENTS below
  ref.txt        the same events, one a line: "wall_time step tag value" (wall_time and value
                 as exact hex floats), the version record first as "wall_time 0 - -"

Needs the `tensorboard` package (pip install tensorboard).  Deterministic.
"""
import os
import sys

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                         "tfevents")
os.makedirs(OUT, exist_ok=True)

T0 = 1767225600.125  # wall times: seconds since the epoch, with a fraction
EVENTS = [  # (wall_time, step, tag, value)
    (T0 + 1.5, 1, "train/loss", 8.3176432),
    (T0 + 1.5, 1, "train/lr", 3e-3),
    (T0 + 2.25, 2, "train/loss", 7.9),
    (T0 + 3.0, 128, "val/bpb", 2.0625),
    (T0 + 4.0, 300, "routing/maxvio_layer1", 0.0),
    (T0 + 5.0, 2**40 + 3, "train/grad_norm", -1.5e-7),
    (T0 + 6.0, 7, "a/tag/that/is/rather/long/" + "x" * 150, 1e30),
]

with open(os.path.join(OUT, "ref.tfevents"), "wb") as f:
    w = RecordWriter(f)
    ev = event_pb2.Event(wall_time=T0, file_version="brain.Event:2")
    w.write(ev.SerializeToString())
    for wall, step, tag, value in EVENTS:
        ev = event_pb2.Event(wall_time=wall, step=step,
                             summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]))
        w.write(ev.SerializeToString())
    w.flush()

with open(os.path.join(OUT, "ref.txt"), "w") as f:
    f.write(f"{T0.hex()} 0 - -\n")
    for wall, step, tag, value in EVENTS:
        f.write(f"{wall.hex()} {step} {tag} {float(value).hex()}\n")
print("wrote", OUT)
