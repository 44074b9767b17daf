"""Every recipe's target is docs/paper.md's number for its row, and its header comment cites where it comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnext.compose import compose_config, recipes

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# docs/paper.md, transcribed: recipe -> (section of docs/paper.md cited, top-1 err, top-5 err, params (M), GFLOPs)
PAPER = {
    "resnet50_imagenet": ("Table 3", 23.9, None, 25.5, 4.1),  # params/GFLOPs: Table 1
    "resnext50_2x40d_imagenet": ("Table 3", 23.0, None, None, None),
    "resnext50_4x24d_imagenet": ("Table 3", 22.6, None, None, None),
    "resnext50_8x14d_imagenet": ("Table 3", 22.3, None, None, None),
    "resnext50_32x4d_imagenet": ("Table 3", 22.2, None, 25.0, 4.2),
    "resnet101_imagenet": ("Table 3", 22.0, 6.0, None, None),  # top-5: Table 4
    "resnext101_2x40d_imagenet": ("Table 3", 21.7, None, None, None),
    "resnext101_4x24d_imagenet": ("Table 3", 21.4, None, None, None),
    "resnext101_8x14d_imagenet": ("Table 3", 21.3, None, None, None),
    "resnext101_32x4d_imagenet": ("Table 3", 21.2, 5.6, None, None),
    "resnet200_imagenet": ("Table 4", 21.7, 5.8, None, None),
    "resnet101_1x100d_imagenet": ("Table 4", 21.3, 5.7, None, None),
    "resnext101_2x64d_imagenet": ("Table 4", 20.7, 5.5, None, None),
    "resnext101_64x4d_imagenet": ("Table 4", 20.4, 5.3, None, None),
    "resnext101_64x4d_320crop_imagenet": ("Table 5", 19.1, 4.4, None, None),
    "resnet50_noshortcut_imagenet": ("Residual ablation", 31.2, None, None, None),
    "resnext50_32x4d_noshortcut_imagenet": ("Residual ablation", 26.1, None, None, None),
    "resnext29_8x64d_cifar10": ("Table 7", 3.65, None, 34.4, None),
    "resnext29_16x64d_cifar10": ("Table 7", 3.58, None, 68.1, None),
    "resnext29_8x64d_cifar100": ("Table 7", 17.77, None, 34.4, None),
    "resnext29_16x64d_cifar100": ("Table 7", 17.31, None, 68.1, None),
    "wrn28_10_cifar10": ("Table 7", 4.17, None, 36.5, None),
    "wrn28_10_cifar100": ("Table 7", 20.50, None, 36.5, None),
    "resnext29_cifar10_fig7": ("Fig. 7", None, None, None, None),
    "resnext101_32x4d_nvidia": ("What reproductions got", round(100 - 79.47, 2), None, None, None),
    "resnext50_32x4d_tv_v2": ("Beyond the paper: torchvision's V2 recipe", 18.802, 4.66, 25.0, None),
    "resnext101_32x8d_tv_v2": ("Beyond the paper: torchvision's V2 recipe", 17.166, 3.772, 88.8, None),
}
NOT_PAPER = {"resnext29_demo_digits", "ig_resnext101_32x8d_finetune"}  # no docs/paper.md fact; say so


def header(name: str) -> str:
    """The recipe's comment lines before `defaults:`."""
    lines = (RECIPES / f"{name}.yaml").read_text().splitlines()
    return "\n".join(lines[:lines.index("defaults:")])


def test_every_recipe_is_listed():
    assert set(recipes()) == set(PAPER) | NOT_PAPER


@pytest.mark.parametrize("name", sorted(PAPER))
def test_targets_are_paper_md_and_cited(name):
    section, top1, top5, params, gflops = PAPER[name]
    p = compose_config([f"+recipe={name}"]).paper
    assert (p.top1_err, p.top5_err, p.params_m, p.gflops) == (top1, top5, params, gflops)
    text = header(name)
    assert f'docs/paper.md "{section}' in text  # the section of docs/paper.md the target comes from
    for value in (top1, top5):
        if value is not None:
            assert f"{value:.2f}".rstrip("0").rstrip(".") in text or f"{value}" in text, (name, value)
    if name.endswith("_imagenet") or name.endswith("_nvidia"):
        assert "training:" in text or "configs.yml" in (RECIPES / f"{name}.yaml").read_text()
    if "cifar" in name and name != "resnext29_cifar10_fig7" and not name.startswith("wrn"):
        assert "10 RUNS" in text and "trainer.seed=0,1,2,3,4,5,6,7,8,9" in text  # Table 7 is a mean of 10 runs


@pytest.mark.parametrize("name", sorted(NOT_PAPER))
def test_non_paper_recipes_say_so(name):
    assert "Not a paper result" in header(name)
    assert compose_config([f"+recipe={name}"]).paper.top1_err is None


PAPER_MD = RECIPES.parent / "docs" / "paper.md"


def test_every_cited_section_of_docs_paper_md_exists():
    """Recipes, conf/, the code and the README cite docs/paper.md "Heading": each heading is there (a cited
    "CIFAR" names the heading that starts with it)."""
    import re

    root = RECIPES.parent
    headings = [h.strip() for h in re.findall(r"^#{2,3} (.+)$", PAPER_MD.read_text(), re.MULTILINE)]
    files = [*RECIPES.glob("*.yaml"), *(root / "conf").rglob("*.yaml"), *(root / "src").rglob("*.py"),
             root / "README.md"]
    cited = {c for f in files for c in re.findall(r'docs/paper\.md "([^"]+)"', f.read_text())}
    assert len(cited) >= 10
    for section in cited:
        assert any(h.startswith(section) for h in headings), section


@pytest.mark.parametrize("name", sorted(PAPER))
def test_targets_are_written_in_docs_paper_md(name):
    """Each recipe's target numbers appear in docs/paper.md (the repo's own account of the paper)."""
    text = PAPER_MD.read_text()
    for value in PAPER[name][1:]:
        if value is not None:
            assert f"{value:.2f}".rstrip("0").rstrip(".") in text or f"{value}" in text, (name, value)
