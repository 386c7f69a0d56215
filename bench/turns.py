"""Turn-by-turn timing of two training-step programs that speak `--lockstep`
(`dimtorch bench train`, bench/train_dim.py): both warm up, then each takes one
timed step in turn, the order flipping every block, so that a shared machine's
noise (another tenant's burst lasts seconds; a step takes a tenth of one) falls
on both alike. Used by bench/compare_train.py and bench/ab_train.py.
"""
import json
import os
import subprocess
import time


class Turns:
    """One --lockstep process: started, warmed up, then stepped on request."""

    def __init__(self, name, cmd, env=None, cwd=None):
        self.name = name
        self.p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=None if env is None else {**os.environ, **env})
        if self.read().get("ready") is not True:
            raise SystemExit(f"{name}: expected its ready line first")

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            raise SystemExit(f"{self.name} ended early (exit status {self.p.returncode})")
        return json.loads(line)

    def step(self):
        self.p.stdin.write("\n")
        self.p.stdin.flush()
        return self.read()["step_ms"]

    def finish(self):
        """Closes standard input and returns the program's closing JSON object."""
        self.p.stdin.close()
        out = self.p.stdout.read().strip().splitlines()
        if self.p.wait() != 0 or not out:
            raise SystemExit(f"{self.name}: exit status {self.p.returncode}")
        return json.loads(out[-1])


def interleave(a, b, blocks, steps, per_turn=1, pause=0.01):
    """Runs blocks of `steps` steps of a and of b, per_turn steps at a time
    each in turn (a first in even blocks, b first in odd ones), and returns
    their step times in milliseconds, one list per block for each. The pause
    between turns lets the idle side's worker threads stop spinning before the
    other's turn starts; it is not timed."""
    ta, tb = [], []
    for k in range(blocks):
        ba, bb = [], []
        done = 0
        while done < steps:
            n = min(per_turn, steps - done)
            for who in ((a, b) if k % 2 == 0 else (b, a)):
                time.sleep(pause)
                (ba if who is a else bb).extend(who.step() for _ in range(n))
            done += n
        ta.append(ba)
        tb.append(bb)
    return ta, tb
