"""cProfile (CPU time) of decode + FieldPipeline on 224 px JPEG fields with the default bundle."""

import cProfile
import pstats
import sys
import time
from pathlib import Path

import cv2

from leukedge.edge.imageio import decode_field
from leukedge.edge.model import load_model
from leukedge.edge.pipeline import FieldPipeline
from leukedge.edge.sources.base import Frame

cv2.setNumThreads(1)
files = sorted(Path("/work/shared/data/taleqani-all/Original").glob("*/*.jpg"))[::20][:120]
data = [p.read_bytes() for p in files]
pipe = FieldPipeline(load_model(sys.argv[1] if len(sys.argv) > 1 else "default", threads=1))


def run():
    for i, d in enumerate(data):
        pipe(Frame(f"f{i}", rgb=decode_field(d), data=d))


run()
pr = cProfile.Profile(time.thread_time)
pr.enable()
c0 = time.thread_time()
run()
c1 = time.thread_time()
pr.disable()
print(f"CPU ms per field: {(c1 - c0) * 1e3 / len(data):.2f}")
pstats.Stats(pr).sort_stats("cumtime").print_stats(40)
