"""``python -m dataset_tools <command> --help``."""
import argparse
import importlib
import sys

COMMANDS = {
    "build-movielens": ("dataset_tools.movielens", "MovieLens raw files + link + KG (+ texts, images) -> dataset folder"),
    "build-amazon-books": ("dataset_tools.amazon_books", "Amazon reviews/metadata JSON lines + link/KG -> dataset folder"),
    "extract-features": ("dataset_tools.extract", "images/texts -> <dataset>.<suffix> feature files (open_clip, "
                                                  "sentence-transformers, crude colour-texture)"),
    "convert-dbp15k": ("dataset_tools.dbp15k", "DBP15K pair folder -> two KG files + JAPE's train/test alignment pairs"),
    "check": ("dataset_tools.check", "validate a dataset folder and print its statistics (exit 1 on errors)"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m dataset_tools",
                                     description="Build multimodal-KG RecBole datasets and their feature files.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_args(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from dataset_tools.atomic import DatasetToolError

    try:
        return args._module.run(args)
    except DatasetToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue (extract-features resumes from its checkpoint)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
