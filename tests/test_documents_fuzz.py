"""The document loader never raises anything but UserError, whatever the bytes."""

from hypothesis import HealthCheck, example, given, settings, strategies as st

from mlx_kv.documents import decode_document, read_document
from mlx_kv.errors import UserError


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from(["strict", "replace"]))
def test_any_bytes_decode_or_fail_cleanly(data, errors):
    try:
        text = decode_document(data, "doc.txt", errors)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert text.strip()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_any_file_reads_or_fails_cleanly(tmp_path, data):
    path = tmp_path / "fuzz.md"
    path.write_bytes(data)
    try:
        text, name = read_document(str(path))
    except UserError:
        pass
    else:
        assert name == "fuzz.md" and text.strip()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
@example("~\x00")  # found by CI: Path.expanduser raised ValueError on the NUL
def test_any_text_source_is_text_or_a_clean_error(source):
    try:
        text, name = read_document(source)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert name in ("text",) or text
