"""S²R's relatives, as data transforms and reward functions over s2r's own machinery.

    score.py     SCoRe (Kumar et al. 2024): the two-attempt format's shaped returns and KL weights
    cct.py       CCT, the confidence/critique transform of SFT data (Yang et al. 2025)
    mistakes.py  mistake tuning and self-rethinking (Tong et al. 2024)

Each is a pure function of sampled, graded attempts (`s2r sample` records), tested by hand.
"""
