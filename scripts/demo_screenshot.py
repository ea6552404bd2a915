"""Screenshot of `dcdgan demo` on a run (the README's docs/demo.png): serve the run, open it in Debian's Chromium
through Playwright, pick one of the run's test images, wait for teacher and student, save the page as PNG.

    python scripts/demo_screenshot.py runs/<run> docs/demo.png [--pick 3] [--backend torch]
"""

import argparse
import socket
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--pick", type=int, default=0, help="which test image to translate (default 0)")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from dcdgan.demo import serve

    app = serve([args.run], port=free_port(), backend=args.backend, block=False)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app.local_url, wait_until="networkidle")
            page.get_by_role("tab", name="Test images").click()
            page.locator("#test-images img").nth(args.pick).click()
            for role in ("input", "teacher", "student"):
                page.wait_for_selector(f"#view-{role} img", timeout=120_000)
            page.wait_for_selector("#native img.native-student", timeout=120_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        app.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
