# The representation recipes that bench/quality.sh and bench/table1.sh share
# (sourced, not run): what each trains, without its length, seed, threads or
# output. docs/evaluation.md, "Representation quality", says how each was
# chosen.

# DIM's best: DIM(L) with infoNCE across two views of basic28, random
# resized crops, AMDIM's score stabilisation, no prior, cosine schedule.
DIM_BEST=(--encoder basic28 --mode local --estimator nce --views 2 --crop-scale 0.4
  --score-clip 10 --gamma 0 --mi-units 256 --batch-size 64 --lr 2e-3 --lr-schedule cosine --bf16)

# Multi-scale DIM (AMDIM's 1-7, 1-5 and 5-5 predictions) on amdim28.
AMDIM=(--method amdim --encoder amdim28 --mi-units 256 --batch-size 64 --lr 2e-3
  --lr-schedule cosine --bf16)
