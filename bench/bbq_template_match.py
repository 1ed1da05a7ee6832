"""Print the BBQ template expander's match figures against the shipped jsonl files.

    PYTHONPATH=$PWD python bench/bbq_template_match.py [DATA_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bias_ray.data.bbq_templates import TEMPLATE_CATEGORIES, expand_category, shipped_match
from bias_ray.spec import default_data_root


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_root()
    total = matched = 0
    print("category | shipped | matched | share | expanded (seed 0) | name pairs/template shipped | expanded")
    for category in TEMPLATE_CATEGORIES:
        if not (root / "bbq" / "data" / f"{category}.jsonl").is_file():
            print(f"{category} | - | - | - | {len(expand_category(root, category))} | - | -")
            continue
        m = shipped_match(root, category)
        total, matched = total + m["n"], matched + m["matched"]
        print(f"{category} | {m['n']} | {m['matched']} | {m['share']:.4f} | {m['n_expanded']} | "
              f"{m['pairs_per_template_shipped']:.2f} | {m['pairs_per_template_expanded']:.2f}")
        for ex in m["misses"]:
            print(f"   miss: Q{ex['question_index']} {ex['context_condition']}/{ex['question_polarity']} "
                  f"answer_info={ex['answer_info']}")
    print(f"all shipped: {matched}/{total} = {matched / total:.4f}")


if __name__ == "__main__":
    main()
