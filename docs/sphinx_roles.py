"""A griffe extension for the API reference: the docstrings cross-reference in reStructuredText
roles (``:class:`~kokorozoo.tasks.base.Task```), which Markdown would show as they are typed; each
becomes inline code of the name a reader sees (the last component where the role has a ``~``)."""

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
