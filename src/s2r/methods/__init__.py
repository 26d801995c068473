"""S²R's relatives, as data transforms and reward functions over s2r's own machinery.

    score.py     SCoRe (Kumar et al. 2024): the two-attempt format's shaped returns and KL weights
    cct.py       CCT, the confidence/critique transform of SFT data (Yang et al. 2025)
    mistakes.py  mistake tuning and self-rethinking (Tong et al. 2024)
    rtuning.py   R-Tuning, "I am sure." / "I am unsure." after the answer (Zhang et al. 2024)
    samples.py   reading `s2r sample` output, their input

As commands: `s2r build --kind cct | mistake-tuning | r-tuning`, `--assistant-prefix`,
`--rethink-from` (docs/cct.md, docs/mistake-tuning.md, docs/r-tuning.md).

Each is a pure function of sampled, graded attempts (`s2r sample` records), tested by hand.
"""
