"""Message pre-processing before prompts are built."""


def test_text_filters_reach_user_text_before_the_prompt_is_built(fresh_assistant):
    """A filter (e.g. a PHI redactor) sees every user text part; the prompt holds only what it returned."""
    fresh_assistant.text_filters.append(lambda text: text.replace("Quorvath", "[NAME]"))
    messages = [{"role": "system", "content": "Quorvath stays in a system turn"},
                {"role": "user", "content": "my name is Quorvath"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "Quorvath again"}]}]
    prompt = fresh_assistant.prepare(messages)
    text = fresh_assistant.tokenizer.decode(prompt.input_ids)
    assert text.count("Quorvath") == 1 and text.count("[NAME]") == 2
    assert messages[1]["content"] == "my name is Quorvath"  # the caller's list is not changed
