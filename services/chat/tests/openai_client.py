"""The official `openai` package, unchanged, against the chat service's OpenAI-compatible API.

Run by tests/openai_python.rs with OPENAI_BASE_URL and OPENAI_API_KEY (an auth-service API key) set.
"""

import openai

client = openai.OpenAI(max_retries=0)

ids = [model.id for model in client.models.list().data]
assert ids == ["gpt-4o-mini"], ids

whole = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    temperature=0,
    max_tokens=20,
)
assert whole.object == "chat.completion", whole
assert whole.choices[0].message.content == "Hello there!", whole
assert whole.choices[0].finish_reason == "stop", whole
assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (11, 7, 18), whole

text, usage, finish = "", None, None
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hello"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage is not None:
        usage = chunk.usage
assert text == "Hello there!", text
assert finish == "stop", finish
assert usage is not None and usage.total_tokens == 18, usage

try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("a model outside the plan was accepted")
except openai.PermissionDeniedError as error:
    assert error.status_code == 403
    assert "not allowed" in error.message, error.message

try:
    client.chat.completions.create(model="gpt-4o-mini", messages=[])
    raise AssertionError("an empty conversation was accepted")
except openai.BadRequestError as error:
    assert error.status_code == 400

try:
    openai.OpenAI(api_key="sk-saaschat-wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as error:
    assert error.status_code == 401

print("openai client ok")
