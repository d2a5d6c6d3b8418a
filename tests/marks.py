"""Which images a check is parametrized over (read by the image and GPU conftests' pytest_generate_tests)."""

from __future__ import annotations


def images_for(metafunc, images):
    """The images a test asked for with `only`, so a check never gets a skipped copy on the others."""
    function = metafunc.function
    variants = getattr(function, "variants", ("cpu", "cuda"))
    frameworks = getattr(function, "frameworks", None)
    return [i for i in images if i.variant in variants and (frameworks is None or i.framework in frameworks)]


def only(*variants, frameworks=None):
    """Run a check only on these variants (and frameworks): the other images do not get a skipped copy."""

    def mark(function):
        function.variants = variants
        if frameworks:
            function.frameworks = frameworks
        return function

    return mark
