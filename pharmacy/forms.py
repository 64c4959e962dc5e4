"""The pharmacist's forms (pages only; the API has its own request models)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from pharmacy.labels import REASON


class ReviewForm(FlaskForm):
    """Reasons from the review standard (处方审核规范) and a note; the decision is the button pressed."""

    reasons = SelectMultipleField(
        _l("Reasons (review standard)"),
        choices=[SelectChoice(code, str(words)) for code, words in REASON.items()],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[Optional()],
    )
    note = TextAreaField(_l("Note to the physician"), validators=[Optional(), Length(max=500)])

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.reasons.choices = [SelectChoice(code, str(words)) for code, words in REASON.items()]
