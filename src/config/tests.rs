use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_yaml(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    Config::load(Some(&path), &env(vars))
}

#[test]
fn the_default_config_loads() {
    let cfg = Config::load(None, &env(&[])).unwrap();
    assert_eq!(cfg.driver, Driver::Filesystem);
    assert_eq!(
        cfg.storage.filesystem.unwrap().rootdirectory,
        PathBuf::from("./data")
    );
    assert_eq!(
        cfg.http.socket_addr().unwrap().to_string(),
        "127.0.0.1:5000"
    );
}

#[test]
fn environment_overrides_keys() {
    let cfg = Config::load(
        None,
        &env(&[
            ("REGISTRY_HTTP_ADDR", ":5001"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/srv/reg"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_LOG_LEVEL", "debug"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.http.socket_addr().unwrap().to_string(), "0.0.0.0:5001");
    assert_eq!(
        cfg.storage.filesystem.unwrap().rootdirectory,
        PathBuf::from("/srv/reg")
    );
    assert!(cfg.storage.delete.enabled);
    assert_eq!(cfg.log.level, LogLevel::Debug);
}

#[test]
fn trusted_proxies_and_connection_limits() {
    let cfg = Config::load(None, &env(&[])).unwrap();
    let defaults: Vec<String> = cfg
        .http
        .trustedproxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(defaults, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(cfg.http.maxconnections, 4096);
    assert_eq!(cfg.http.maxconnectionsperaddress, 512);
    assert_eq!(cfg.uploads.maxperrepository, 1000);
    assert_eq!(cfg.uploads.maxperuser, 500);
    assert_eq!(
        cfg.uploads.idletimeout,
        std::time::Duration::from_secs(3600)
    );
    let cfg = Config::load(
        None,
        &env(&[
            ("REGISTRY_UPLOADS_MAXPERREPOSITORY", "7"),
            ("REGISTRY_UPLOADS_MAXPERUSER", "3"),
            ("REGISTRY_UPLOADS_IDLETIMEOUT", "10m"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.uploads.maxperrepository, 7);
    assert_eq!(cfg.uploads.maxperuser, 3);
    assert_eq!(cfg.uploads.idletimeout, std::time::Duration::from_secs(600));
    let cfg = Config::load(
        None,
        &env(&[
            ("REGISTRY_HTTP_TRUSTEDPROXIES", "10.0.0.0/8, 192.0.2.7"),
            ("REGISTRY_HTTP_MAXCONNECTIONS", "100"),
            ("REGISTRY_HTTP_MAXCONNECTIONSPERADDRESS", "10"),
        ]),
    )
    .unwrap();
    let set: Vec<String> = cfg
        .http
        .trustedproxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(set, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert_eq!(cfg.http.maxconnections, 100);
    assert_eq!(cfg.http.maxconnectionsperaddress, 10);
    let cfg = from_yaml("http:\n  trustedproxies: []\n", &[]).unwrap();
    assert!(cfg.http.trustedproxies.is_empty());
    let cfg = from_yaml("http:\n  trustedproxies: ['::1', 172.16.0.0/12]\n", &[]).unwrap();
    assert_eq!(cfg.http.trustedproxies.len(), 2);
    let err = from_yaml("http:\n  trustedproxies: [nginx]\n", &[]).unwrap_err();
    assert!(err.to_string().contains("nginx"), "{err}");
    let cfg = from_yaml("http:\n  forwardedheader: forwarded\n", &[]).unwrap();
    assert_eq!(cfg.http.forwardedheader, ForwardedHeader::Forwarded);
    assert!(from_yaml("http:\n  forwardedheader: x-real-ip\n", &[]).is_err());
    for bad in [
        "http:\n  maxconnections: 0\n",
        "uploads:\n  idletimeout: 0s\n",
    ] {
        assert!(from_yaml(bad, &[]).is_err(), "{bad}");
    }
}

#[test]
fn distribution_style_file_with_inmemory() {
    let cfg = from_yaml(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  inmemory:\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
        &[],
    )
    .unwrap();
    assert_eq!(cfg.driver, Driver::InMemory);
    assert!(cfg.storage.delete.enabled);
}

#[test]
fn driver_selector_variable() {
    let cfg = Config::load(None, &env(&[("REGISTRY_STORAGE", "inmemory")])).unwrap();
    assert_eq!(cfg.driver, Driver::InMemory);
}

#[test]
fn s3_from_distribution_variables() {
    let cfg = Config::load(
        None,
        &env(&[
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "AKIA1"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "very-secret"),
            ("REGISTRY_STORAGE_S3_REGION", "eu-west-1"),
            (
                "REGISTRY_STORAGE_S3_REGIONENDPOINT",
                "http://127.0.0.1:9000",
            ),
            ("REGISTRY_STORAGE_S3_BUCKET", "images"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/registry"),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
            ("REGISTRY_STORAGE_S3_SECURE", "false"),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "8388608"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.driver, Driver::S3);
    let s3 = cfg.storage.s3.clone().unwrap();
    assert_eq!(s3.bucket, "images");
    assert_eq!(s3.accesskey.as_deref(), Some("AKIA1"));
    assert_eq!(s3.regionendpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(s3.forcepathstyle && !s3.secure && !s3.skipverify);
    assert_eq!(s3.chunksize, 8 << 20);
    assert!(!format!("{cfg:?}").contains("very-secret"));
    let err = Config::load(
        None,
        &env(&[
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "1024"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("chunksize"), "{err}");
}

#[test]
fn s3_multipart_copy_keys() {
    let s3 = |yaml: &str, vars: &[(&str, &str)]| {
        from_yaml(&format!("storage:\n  s3:\n    bucket: b\n{yaml}"), vars)
    };
    // distribution's defaults: 32 MiB threshold and parts, 100 parts at once.
    let defaults = s3("", &[]).unwrap().storage.s3.unwrap();
    assert_eq!(defaults.multipartcopythresholdsize, 32 << 20);
    assert_eq!(defaults.multipartcopychunksize, 32 << 20);
    assert_eq!(defaults.multipartcopymaxconcurrency, 100);
    let loaded = s3(
        "    multipartcopythresholdsize: 0\n    multipartcopychunksize: 5242880\n    \
         multipartcopymaxconcurrency: 4\n",
        &[],
    )
    .unwrap();
    // Implemented now: not reported as distribution keys berth ignores.
    assert!(loaded.ignored.is_empty(), "{:?}", loaded.ignored);
    let cfg = loaded.storage.s3.unwrap();
    assert_eq!(cfg.multipartcopythresholdsize, 0);
    assert_eq!(cfg.multipartcopychunksize, 5 << 20);
    assert_eq!(cfg.multipartcopymaxconcurrency, 4);
    // The variables override the file's keys.
    let cfg = s3(
        "    multipartcopychunksize: 5242880\n",
        &[
            ("REGISTRY_STORAGE_S3_MULTIPARTCOPYCHUNKSIZE", "67108864"),
            ("REGISTRY_STORAGE_S3_MULTIPARTCOPYMAXCONCURRENCY", "8"),
            (
                "REGISTRY_STORAGE_S3_MULTIPARTCOPYTHRESHOLDSIZE",
                "1073741824",
            ),
        ],
    )
    .unwrap()
    .storage
    .s3
    .unwrap();
    assert_eq!(cfg.multipartcopychunksize, 64 << 20);
    assert_eq!(cfg.multipartcopymaxconcurrency, 8);
    assert_eq!(cfg.multipartcopythresholdsize, 1 << 30);
    assert!(format!("{cfg:?}").contains("multipartcopychunksize: 67108864"));
}

#[test]
fn s3_multipart_copy_keys_out_of_range_are_refused() {
    let refused = |vars: &[(&str, &str)], key: &str| {
        let mut all = vec![
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
        ];
        all.extend_from_slice(vars);
        let err = Config::load(None, &env(&all)).unwrap_err();
        assert!(err.to_string().contains(key), "{vars:?}: {err}");
    };
    let chunk = "REGISTRY_STORAGE_S3_MULTIPARTCOPYCHUNKSIZE";
    refused(&[(chunk, "5242879")], "multipartcopychunksize");
    refused(&[(chunk, "5368709121")], "multipartcopychunksize");
    refused(&[(chunk, "32MB")], "multipartcopychunksize");
    let concurrency = "REGISTRY_STORAGE_S3_MULTIPARTCOPYMAXCONCURRENCY";
    refused(&[(concurrency, "0")], "multipartcopymaxconcurrency");
    refused(&[(concurrency, "-1")], "multipartcopymaxconcurrency");
    let threshold = "REGISTRY_STORAGE_S3_MULTIPARTCOPYTHRESHOLDSIZE";
    refused(&[(threshold, "-1")], "multipartcopythresholdsize");
    // The limits themselves are fine.
    for (key, value) in [
        (chunk, "5242880"),
        (chunk, "5368709120"),
        (concurrency, "1"),
    ] {
        let mut all = vec![
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
        ];
        all.push((key, value));
        Config::load(None, &env(&all)).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
    }
}

#[test]
fn upload_purging_durations() {
    let cfg = from_yaml(
        "storage:\n  filesystem:\n    rootdirectory: /x\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1h30m\n      interval: 90s\n      dryrun: false\n",
        &[],
    )
    .unwrap();
    let purging = cfg.storage.maintenance.uploadpurging;
    assert_eq!(purging.age, std::time::Duration::from_secs(5400));
    assert_eq!(purging.interval, std::time::Duration::from_secs(90));
    let default = Config::load(None, &env(&[])).unwrap();
    assert_eq!(
        default.storage.maintenance.uploadpurging.age,
        std::time::Duration::from_secs(168 * 3600)
    );
    let err = from_yaml(
        "storage:\n  maintenance:\n    uploadpurging:\n      age: soon\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("duration"), "{err}");
}

#[test]
fn auth_and_tls_from_distribution_variables() {
    let cfg = Config::load(
        None,
        &env(&[
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/domain.crt"),
            ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
        ]),
    )
    .unwrap();
    let htpasswd = cfg.auth.htpasswd.clone().unwrap();
    assert_eq!(htpasswd.realm, "Registry Realm");
    assert_eq!(htpasswd.path, PathBuf::from("/auth/htpasswd"));
    assert!(cfg.auth.enabled() && cfg.auth.token.is_none());
    let tls = cfg.http.tls.unwrap();
    assert_eq!(tls.certificate, PathBuf::from("/certs/domain.crt"));
    assert_eq!(tls.key, PathBuf::from("/certs/domain.key"));
    assert!(tls.clientcas.is_empty());
    let err = from_yaml(
        "http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: tls1.0\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("minimumtls"), "{err}");
}

#[test]
fn token_requests_per_minute_has_a_default_and_a_variable() {
    let yaml = "auth:\n  htpasswd:\n    path: /h\n";
    assert_eq!(
        from_yaml(yaml, &[]).unwrap().auth.tokenrequestsperminute,
        600
    );
    let cfg = from_yaml(yaml, &[("REGISTRY_AUTH_TOKENREQUESTSPERMINUTE", "30")]).unwrap();
    assert_eq!(cfg.auth.tokenrequestsperminute, 30);
}

#[test]
fn token_partial_chains_are_off_unless_set() {
    let yaml = "auth:\n  token:\n    realm: https://auth.example/token\n    service: registry\n    issuer: auth.example\n    rootcertbundle: /certs/bundle.pem\n";
    assert!(
        !from_yaml(yaml, &[])
            .unwrap()
            .auth
            .token
            .unwrap()
            .partialchain
    );
    let cfg = from_yaml(yaml, &[("REGISTRY_AUTH_TOKEN_PARTIALCHAIN", "true")]).unwrap();
    assert!(cfg.auth.token.unwrap().partialchain);
}

#[test]
fn token_auth_and_access_rules() {
    let cfg = from_yaml(
        "auth:\n  token:\n    realm: https://auth.example/token\n    service: registry\n    issuer: auth.example\n    rootcertbundle: /certs/bundle.pem\n",
        &[],
    )
    .unwrap();
    let token = cfg.auth.token.clone().unwrap();
    assert_eq!(token.service, "registry");
    assert_eq!(token.expiration, std::time::Duration::from_secs(300));
    // berth as the token server: htpasswd users, a signing key, access rules.
    let cfg = from_yaml(
        "auth:\n  htpasswd:\n    path: /h\n  token:\n    realm: https://r.example/token\n    service: s\n    issuer: i\n    signingkey: /k.pem\n    expiration: 10m\n  access:\n    - account: ci\n      repositories: ['*']\n      actions: [pull]\n",
        &[],
    )
    .unwrap();
    assert_eq!(cfg.auth.access.unwrap()[0].actions, vec!["pull"]);
    assert_eq!(
        cfg.auth.token.unwrap().expiration,
        std::time::Duration::from_secs(600)
    );
    // Rules beside an external token server would be ignored: refused.
    let err = from_yaml(
        "auth:\n  token:\n    realm: https://a.example/token\n    service: s\n    issuer: i\n    jwks: /j\n  access:\n    - account: a\n      repositories: ['*']\n      actions: [pull]\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("external token server"), "{err}");
    // Realms clients cannot use, or that would shadow the API.
    for realm in ["/token", "https://r.example/v2/token"] {
        let err = from_yaml(
            &format!("auth:\n  token:\n    realm: {realm}\n    service: s\n    issuer: i\n    jwks: /j\n"),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("auth.token.realm"), "{err}");
    }
    // Selecting a method that is not configured must not open the registry.
    for method in ["htpasswd", "token"] {
        let err = Config::load(None, &env(&[("REGISTRY_AUTH", method)])).unwrap_err();
        assert!(err.to_string().contains("open registry"), "{err}");
    }
    // A token method without keys could accept nothing; two methods must form the issuer.
    let err = from_yaml(
        "auth:\n  token:\n    realm: https://a.example/token\n    service: s\n    issuer: i\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("rootcertbundle"), "{err}");
    let err = from_yaml(
        "auth:\n  htpasswd:\n    path: /h\n  token:\n    realm: https://a.example/token\n    service: s\n    issuer: i\n    jwks: /j\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("signingkey"), "{err}");
    let err = from_yaml(
        "auth:\n  access:\n    - account: a\n      actions: [pull]\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("auth.access"), "{err}");
}

#[test]
fn notification_endpoints() {
    let cfg = from_yaml(
        "notifications:\n  spooldir: /spool\n  endpoints:\n    - name: a\n      url: https://hooks.example/a\n      timeout: 500ms\n      headers:\n        Authorization: [Bearer t]\n      ignore:\n        actions: [pull]\n",
        &[],
    )
    .unwrap();
    let n = &cfg.notifications;
    assert_eq!(n.spooldir.as_deref(), Some(Path::new("/spool")));
    assert_eq!(
        n.endpoints[0].timeout,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(n.endpoints[0].threshold, 10);
    assert_eq!(n.endpoints[0].ignore.actions, ["pull"]);
    for bad in [
        "    - name: a\n      url: not a url\n",
        "    - name: a\n      url: ftp://x/\n",
        "    - name: a\n      url: http://x/\n    - name: a\n      url: http://y/\n",
    ] {
        let err = from_yaml(&format!("notifications:\n  endpoints:\n{bad}"), &[]).unwrap_err();
        assert!(err.to_string().contains("notifications.endpoints"), "{err}");
    }
}

#[test]
fn bad_values_name_their_key() {
    let err = from_yaml("storage:\n  delete:\n    enabled: maybe\n", &[]).unwrap_err();
    assert!(err.to_string().contains("storage.delete.enabled"), "{err}");
    let err = Config::load(None, &env(&[("REGISTRY_HTTP_ADDR", "nonsense")])).unwrap_err();
    assert!(err.to_string().contains("http.addr"), "{err}");
    let err = from_yaml("log:\n  level: loud\n", &[]).unwrap_err();
    assert!(err.to_string().contains("log.level"), "{err}");
}

#[test]
fn refuses_to_ignore_security_sections() {
    let err = from_yaml("auth:\n  silly:\n    realm: r\n    service: s\n", &[]).unwrap_err();
    assert!(err.to_string().contains("silly"), "{err}");
    let err = Config::load(None, &env(&[("REGISTRY_AUTH", "ldap")])).unwrap_err();
    assert!(err.to_string().contains("ldap"), "{err}");
    let err = from_yaml(
        "storage:\n  filesystem:\n    rootdirectory: /x\n  inmemory:\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("exactly one"), "{err}");
}

/// One set of defaults: the shipped file, an empty one, a minimal hand-written one and no file
/// at all load the same configuration.
#[test]
fn every_way_of_leaving_a_key_out_gets_the_shipped_defaults() {
    let shipped = format!("{:?}", Config::load(None, &env(&[])).unwrap());
    for yaml in [
        "version: 0.1\n",
        "version: 0.1\nstorage:\n  filesystem: {}\n",
    ] {
        let loaded = format!("{:?}", from_yaml(yaml, &[]).unwrap());
        assert_eq!(loaded, shipped, "file {yaml:?}");
    }
    let mut cfg = from_yaml("", &[]).unwrap();
    cfg.version = Some("0.1".into());
    assert_eq!(format!("{cfg:?}"), shipped, "an empty file");
    assert_eq!(cfg.http.addr, "127.0.0.1:5000");
    assert!(!cfg.storage.delete.enabled);
    assert!(cfg.ignored.is_empty(), "{:?}", cfg.ignored);
}

#[test]
fn misspelled_keys_stop_start_up_with_their_suggestion() {
    let err = from_yaml(
        "http:\n  adress: 0.0.0.0:5000\nstorage:\n  filesystem:\n    rootdir: /srv\n",
        &[
            ("REGISTRY_HTTP_SECRET", "s3cr3t"),
            ("REGISTRY_HTTP_DRAINTIMOUT", "5s"),
        ],
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "`adress`: unknown key under `http`; did you mean `addr`?",
        "`draintimout`: unknown key under `http` (from REGISTRY_HTTP_DRAINTIMOUT); did you mean \
         `draintimeout`?",
        "`rootdir`: unknown key under `storage.filesystem`; did you mean `rootdirectory`?",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    assert!(
        !err.contains("http.secret"),
        "only reported, not fatal: {err}"
    );
}

/// Keys near no known one, distribution's unimplemented ones and top-level variables that are
/// not berth's (Kubernetes' `REGISTRY_PORT`) are reported and change nothing.
#[test]
fn other_unknown_keys_are_kept_as_warnings() {
    let cfg = from_yaml(
        "http:\n  secret: s3cr3t\nmycompany:\n  owner: ops\n",
        &[("REGISTRY_PORT", "tcp://10.0.0.1:5000")],
    )
    .unwrap();
    let found: Vec<String> = cfg.ignored.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        found,
        [
            "`http.secret` is not implemented by berth and is ignored (not needed: berth keeps \
             upload state on the server, not in signed URLs)",
            "`mycompany`: unknown key at the top level, ignored",
            "`port`: unknown key at the top level (from REGISTRY_PORT), ignored",
        ]
    );
    assert_eq!(cfg.http.addr, "127.0.0.1:5000");
    assert_eq!(
        cfg.storage.filesystem.unwrap().rootdirectory,
        PathBuf::from("./data")
    );
}

/// A section whose keys are all commented out is the empty section.
#[test]
fn empty_sections_are_their_defaults() {
    let shipped = format!("{:?}", Config::load(None, &env(&[])).unwrap());
    let cfg = from_yaml(
        "version: 0.1\nlog:\nhttp:\n  # addr: :5000\n  headers:\nstorage:\n  delete:\n  cache:\n  \
         maintenance:\n    uploadpurging:\nnotifications:\n  endpoints:\nhealth:\n  storagedriver:\n\
         uploads:\nauth:\n",
        &[],
    )
    .unwrap();
    assert_eq!(format!("{cfg:?}"), shipped);
}

/// Every section's default is constructible (it is what an empty section deserializes to).
#[test]
fn every_section_default_constructs() {
    let _ = (
        Config::default(),
        HttpConfig::default(),
        StorageConfig::default(),
        AuthConfig::default(),
        LogConfig::default(),
        NotificationsConfig::default(),
        HealthConfig::default(),
        UploadsConfig::default(),
        RedisPoolConfig::default(),
        PrometheusConfig::default(),
        CacheConfig::default(),
        MaintenanceConfig::default(),
        UploadPurgingConfig::default(),
    );
}

#[test]
fn the_prefix_is_normalised_and_checked() {
    for (given, kept) in [
        ("/my/registry/", "/my/registry"),
        ("/registry", "/registry"),
        ("registry/", "/registry"),
        ("/", ""),
        ("", ""),
    ] {
        let cfg = from_yaml(&format!("http:\n  prefix: '{given}'\n"), &[]).unwrap();
        assert_eq!(cfg.http.prefix, kept, "{given:?}");
    }
    for bad in ["/a//b/", "/a/../b/", "/reg?x/", "/reg/v2/", "/é/", "/a b/"] {
        let err = from_yaml(&format!("http:\n  prefix: '{bad}'\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("http.prefix"), "{bad}: {err}");
    }
}

#[test]
fn headers_are_checked_and_layerinfo_is_blobdescriptor() {
    let cfg = from_yaml(
        "http:\n  headers:\n    X-Content-Type-Options: [nosniff]\n    X-Frame-Options: [DENY]\n\
         storage:\n  cache:\n    layerinfo: inmemory\n",
        &[],
    )
    .unwrap();
    assert_eq!(cfg.http.extra_headers().unwrap().len(), 2);
    assert_eq!(
        cfg.storage.cache.blobdescriptor,
        Some(BlobDescriptorCache::Inmemory)
    );
    let err = from_yaml("http:\n  headers:\n    'Bad Name': [x]\n", &[]).unwrap_err();
    assert!(err.to_string().contains("not a valid header name"), "{err}");
}

/// Values are checked in the file's words, not the Rust types' names.
#[test]
fn a_bad_keyword_lists_the_words_allowed() {
    let err = from_yaml("log:\n  level: verbose\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"verbose\" is not one of error, warn, info, debug, trace")
            && err.contains("log.level"),
        "{err}"
    );
    assert!(!err.contains("LogLevel"), "{err}");
    let err = from_yaml("storage:\n  cache:\n    blobdescriptor: redsi\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"redsi\" is not one of inmemory, redis"),
        "{err}"
    );
    let cfg = from_yaml("log:\n  level: DEBUG\n  formatter: json\n", &[]).unwrap();
    assert_eq!(cfg.log.level, LogLevel::Debug);
}

/// Variables are strings until a key needs a number or a boolean: a realm or password of digits
/// keeps its leading zeros.
#[test]
fn variables_keep_their_text() {
    let cfg = from_yaml(
        "",
        &[
            ("REGISTRY_AUTH_HTPASSWD_REALM", "007"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/etc/htpasswd"),
            ("REGISTRY_REDIS_ADDR", "127.0.0.1:6379"),
            ("REGISTRY_REDIS_PASSWORD", "0123"),
            ("REGISTRY_HTTP_MAXCONNECTIONS", "10"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.auth.htpasswd.unwrap().realm, "007");
    assert_eq!(cfg.redis.unwrap().password.as_deref(), Some("0123"));
    assert_eq!(cfg.http.maxconnections, 10);
    assert!(cfg.storage.delete.enabled);
}
