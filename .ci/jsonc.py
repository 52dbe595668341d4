"""Check JSON-with-comments files such as devcontainer.json: comments allowed, trailing commas not.

python .ci/jsonc.py FILE...        exit 1, naming the file and line, if one does not parse
python .ci/jsonc.py --print FILE   print FILE as plain JSON (to feed a JSON Schema validator)
"""

import json
import re
import sys

# A string literal (kept as is), or a // or /* */ comment (blanked, newlines kept so that line
# numbers in errors stay right).
TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def strip_comments(text: str) -> str:
    def blank(match: re.Match[str]) -> str:
        token = match.group(0)
        return token if token.startswith('"') else re.sub(r"[^\n]", " ", token)

    return TOKEN.sub(blank, text)


def load(path: str) -> object:
    with open(path, encoding="utf-8") as f:
        return json.loads(strip_comments(f.read()))


def main(args: list[str]) -> int:
    if args[:1] == ["--print"] and len(args) == 2:
        print(json.dumps(load(args[1]), indent=2))
        return 0
    failed = 0
    for path in args:
        try:
            load(path)
        except (ValueError, OSError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
