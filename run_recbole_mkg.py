"""Train and test a recbole-mkg or RecBole model.

    python run_recbole_mkg.py --model=MultiKG4Rec                      # embedded mkg-demo dataset
    python run_recbole_mkg.py --model=KGAT --dataset=ml-100k-kg --data_path=../shared/datasets
    python run_recbole_mkg.py --model=BPR --config_files="a.yaml b.yaml" --learning_rate=0.005

Flags mirror RecBole's run_recbole.py: --model, --dataset, --config_files (space separated), and any
--key=value config override.
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default="MultiKG4Rec", help="model name (plugin or RecBole)")
    parser.add_argument("--dataset", "-d", type=str, default="mkg-demo", help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="config files, space separated")
    args, unknown = parser.parse_known_args(argv)
    overrides = {}
    for arg in unknown:
        if not arg.startswith("--") or "=" not in arg:
            parser.error(f"unrecognised argument {arg!r}: config overrides are written --key=value")
        key, value = arg[2:].split("=", 1)
        overrides[key] = value
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    return args, config_files, overrides


def main(argv=None):
    args, config_files, overrides = parse_args(argv)
    from recbole_mkg.quick_start import run_recbole_mkg

    result = run_recbole_mkg(model=args.model, dataset=args.dataset, config_file_list=config_files,
                             config_dict=overrides)
    print(f"test result ({result['model']} on {result['dataset']}): {dict(result['test_result'])}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
