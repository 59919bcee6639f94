"""Regenerates the bundled sample dataset (samples/churn/data/churn.csv) deterministically.

A telecom-churn-like table: numeric and categorical features, messy category spellings,
missing values in both kinds, and a few exact duplicate rows, so the demo shows every cleaning
step. Run: python -m samples.generate
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 5000
HERE = Path(__file__).parent


def churn(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 73, rows)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], rows, p=[0.55, 0.25, 0.2])
    internet = rng.choice(["DSL", "Fiber optic", "No"], rows, p=[0.35, 0.45, 0.2])
    payment = rng.choice(["Electronic check", "Mailed check", "Bank transfer", "Credit card"], rows)
    senior = rng.random(rows) < 0.16
    monthly = np.round(
        20 + 45 * (internet == "Fiber optic") + 25 * (internet == "DSL") + rng.normal(0, 12, rows),
        2,
    ).clip(18, 120)
    support_calls = rng.poisson(1.2 + 1.5 * (internet == "Fiber optic"), rows)
    logit = (
        -1.2
        - 0.045 * tenure
        + 1.4 * (contract == "Month-to-month")
        - 0.8 * (contract == "Two year")
        + 0.9 * (internet == "Fiber optic")
        + 0.5 * (payment == "Electronic check")
        + 0.35 * support_calls
        + 0.4 * senior
        + 0.01 * (monthly - 60)
    )
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "customer_id": [f"CUST-{i:05d}" for i in range(rows)],
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": np.round(monthly * tenure * rng.uniform(0.9, 1.1, rows), 2),
            "support_calls": support_calls,
            "senior_citizen": np.where(senior, "Yes", "No"),
            "contract": contract,
            "internet_service": internet,
            "payment_method": payment,
            "churned": np.where(churned, "yes", "no"),
        }
    )
    # Real exports are messy: odd spellings, gaps, and the same record exported twice.
    messy = rng.random(rows) < 0.05
    frame.loc[messy, "contract"] = frame.loc[messy, "contract"].str.upper() + " "
    frame.loc[rng.random(rows) < 0.02, "total_charges"] = np.nan
    frame.loc[rng.random(rows) < 0.02, "payment_method"] = None
    return pd.concat([frame, frame.sample(40, random_state=seed)], ignore_index=True)


if __name__ == "__main__":
    churn().to_csv(HERE / "churn" / "data" / "churn.csv", index=False)
