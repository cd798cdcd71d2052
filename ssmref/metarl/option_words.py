"""Refusals in the words the user typed: a setting of a run configuration named by its option.

``make_config`` checks settings by their configuration names (``inner_lr``, ``policy
hidden_sizes[0]``); on the command line the user typed ``--inner-lr`` or ``--hidden``, and the
message should say that.
"""

import re

# the setting a refusal names -> the option that sets it (the others are "--" + name with "-")
OPTION_OF = {"hidden_sizes": "--hidden", "state_dim": "--state-dim",
             "ssm_output_dim": "--state-dim", "kind": "--policy"}
SETTING = re.compile(r"^(?:policy |family |maml )?([a-z][a-z_]*)(?:\[\d+\])?(?= must| is )")


def _option(name):
    return OPTION_OF.get(name, "--" + name.replace("_", "-"))


def in_option_words(message, given):
    """``message`` of a refused setting, naming the option the user typed instead of the
    setting (``inner_lr must be >= 0.0`` -> ``--inner-lr must be >= 0.0``) when ``given``
    (:func:`ssmref.metarl.train.given_settings`) holds that setting; another given setting the
    message names after it is named by its option too (``... at most adapt_rounds (2)`` ->
    ``... at most --adapt-rounds (2)``)."""
    names = set(given) | {k for v in given.values() if isinstance(v, dict) for k in v}
    match = SETTING.match(message)
    if not match or match.group(1) not in names:
        return message
    rest = message[match.end():]
    for name in sorted(names - {match.group(1)}, key=len, reverse=True):
        rest = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", _option(name), rest)
    return _option(match.group(1)) + rest
