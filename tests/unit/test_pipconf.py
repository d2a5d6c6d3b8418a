from labstack.build.pipconf import find_ca_bundle, parse_pip_config_list, sources_from_config

PIP_CONFIG_LIST = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.extra-index-url='file:///a/simple file:///b/simple'
global.find-links='/opt/wheels'
"""


def test_pip_config_list_is_parsed_into_sources(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    config = parse_pip_config_list(PIP_CONFIG_LIST.replace("/etc/ssl/certs/ca-certificates.crt", str(bundle)))
    sources = sources_from_config(config, {})
    assert sources.extra_index_urls == ("file:///a/simple", "file:///b/simple")
    assert sources.find_links == ("/opt/wheels",)
    assert sources.cert == str(bundle)
    args = sources.uv_args()
    assert args[:2] == ["--index-strategy", "unsafe-best-match"]
    assert args.count("--extra-index-url") == 2 and "--find-links" in args
    assert sources.uv_env() == {"SSL_CERT_FILE": str(bundle)}


def test_ca_bundle_falls_back_through_the_environment_in_order(tmp_path):
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    first.write_text("x")
    second.write_text("y")
    env = {"SSL_CERT_FILE": str(first), "REQUESTS_CA_BUNDLE": str(second)}
    assert find_ca_bundle({}, env) == str(first)
    assert find_ca_bundle({"cert": "/does/not/exist"}, {"REQUESTS_CA_BUNDLE": str(second)}) == str(second)
    assert find_ca_bundle({}, {}) is None
