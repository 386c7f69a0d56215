#!/usr/bin/python3
"""A/B of two dimtorch binaries, or of one binary under two environments, on
`dimtorch bench train`, taken turn by turn (bench/turns.py): blocks of steps,
the order flipping every block; the median and range of the blocks' ratios
B / A (images/s), and whether the two compute the same losses (they should,
bit for bit, when a change is meant to leave the numerics alone).

    /usr/bin/python3 bench/ab_train.py A B [--repeats 8] [--per-turn 5] [bench train flags...]

A and B are each a binary, optionally preceded by environment settings and a
colon: VAR=VALUE[,VAR=VALUE...]:BINARY. e.g. the step before and after a
change (git worktree or a second clone for the old binary), or with and
without the fused optimiser:
    /usr/bin/python3 bench/ab_train.py /tmp/old/bin/dimtorch bin/dimtorch --encoder dcgan32 --mi-units 512
    /usr/bin/python3 bench/ab_train.py DIMTORCH_FUSED_OPTIM=0:bin/dimtorch bin/dimtorch --bf16
"""
import json
import statistics
import sys

from turns import Turns, interleave


def side(spec):
    env = {}
    if ":" in spec and "=" in spec.split(":", 1)[0]:
        settings, spec = spec.split(":", 1)
        for kv in settings.split(","):
            k, v = kv.split("=", 1)
            env[k] = v
    return spec, env


def option(rest, name, default):
    if name in rest:
        i = rest.index(name)
        return int(rest[i + 1]), rest[:i] + rest[i + 2:]
    return default, rest


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    (a, env_a), (b, env_b) = side(args[0]), side(args[1])
    mine = ("--repeats", "--per-turn", "--steps", "--batch-size")  # read here: --name=N becomes --name N
    rest = [p for x in args[2:] for p in (x.split("=", 1) if x.split("=", 1)[0] in mine else [x])]
    repeats, rest = option(rest, "--repeats", 8)
    per_turn, rest = option(rest, "--per-turn", 5)
    steps, rest = option(rest, "--steps", 20)
    batch, _ = option(rest, "--batch-size", 64)
    cmd = ["bench", "train", "--json", "--lockstep", "--steps", str(repeats * steps)] + rest
    ta = Turns("A", [a] + cmd, env=env_a)
    tb = Turns("B", [b] + cmd, env=env_b)
    sa, sb = interleave(ta, tb, repeats, steps, per_turn)
    ra, rb = ta.finish(), tb.finish()
    ratios = [sum(x) / sum(y) for x, y in zip(sa, sb)]
    same = ra["first_loss"] == rb["first_loss"] and ra["last_loss"] == rb["last_loss"]
    med_a = statistics.median(batch * len(x) * 1000 / sum(x) for x in sa)
    med_b = statistics.median(batch * len(y) * 1000 / sum(y) for y in sb)
    print(f"bench train {' '.join(rest)}: {repeats} blocks of {steps} steps taken turn by turn ({per_turn} at a time)")
    print(f"A {args[0]}: median {med_a:.1f} images/s; B {args[1]}: median {med_b:.1f} images/s")
    print(f"B / A: median {statistics.median(ratios):.3f}x (range {min(ratios):.3f}x to {max(ratios):.3f}x); "
          f"losses {'identical' if same else 'differ'} (first {ra['first_loss']:.6f} and {rb['first_loss']:.6f}, "
          f"last {ra['last_loss']:.6f} and {rb['last_loss']:.6f})")
    print(json.dumps({"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
                      "ratios": ratios, "a_images_per_sec": med_a, "b_images_per_sec": med_b, "losses_identical": same}))


if __name__ == "__main__":
    main()
