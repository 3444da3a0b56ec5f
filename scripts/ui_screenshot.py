"""The README's screenshot of the search page: ``make ui`` (``cir demo --ui``) running, then

    python scripts/ui_screenshot.py http://127.0.0.1:7860 docs/images/search-page.png

runs an example query (``--example N``, the first by default) with reranking in headless
Chromium, opens the first result's rationale when there is one and saves the whole page.
"""

from __future__ import annotations

import argparse

from integration.browser import headless_chromium, save_screenshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the page, e.g. http://127.0.0.1:7860")
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--example", type=int, default=1, help="which example query to run")
    args = parser.parse_args()

    from selenium.webdriver.common.by import By

    driver = headless_chromium(width=1180)
    try:
        driver.implicitly_wait(60)
        driver.get(args.url.rstrip("/") + "/")
        driver.find_elements(By.CSS_SELECTOR, "#examples a.example")[args.example - 1].click()
        driver.find_element(By.ID, "rerank").click()
        driver.find_element(By.ID, "search").click()
        driver.find_element(By.CSS_SELECTOR, "#results figure.result")
        # The first result's rationale, when the page shows one (a change verifier reranked).
        driver.implicitly_wait(0)
        for summary in driver.find_elements(By.CSS_SELECTOR, "details.rationale summary")[:1]:
            summary.click()
        print(save_screenshot(driver, args.out))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
