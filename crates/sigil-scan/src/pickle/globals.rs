//! Which pickle globals are allowed, which are dangerous and why.
//!
//! Owns: the built-in dangerous list (by category), the `weights-only` allowlist (what
//! `torch.load(weights_only=True)` accepts by default), the `standard` profile (weights-only plus
//! NumPy/joblib array reconstruction), and the user allow/deny lists from `sigil.yaml`.
//! Order of decision: user deny, built-in dangerous, user allow, profile allow, else suspicious.
//! A user allow entry never clears a built-in dangerous global (fail closed).

use crate::report::{Category, Verdict};

/// Allowlist profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Exactly what `torch.load(weights_only=True)` accepts by default.
    WeightsOnly,
    /// Weights-only plus NumPy array/dtype reconstruction and joblib's array wrappers.
    #[default]
    Standard,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "weights-only" => Ok(Self::WeightsOnly),
            "standard" => Ok(Self::Standard),
            _ => Err(format!(
                "unknown allowlist profile {s:?}; use weights-only or standard"
            )),
        }
    }
}

/// User-extensible global policy.
#[derive(Debug, Clone, Default)]
pub struct GlobalPolicy {
    pub profile: Profile,
    /// `module.name` or `module.*` entries allowed on top of the profile.
    pub allow: Vec<String>,
    /// `module.name` or `module.*` entries always refused.
    pub deny: Vec<String>,
}

/// The decision about one global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalVerdict {
    pub verdict: Verdict,
    pub category: Category,
    pub reason: String,
}

const TORCH_DTYPES: &[&str] = &[
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "chalf",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "quint8",
    "qint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    // layouts, memory formats and quantization schemes
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
    // legacy typed storages
    "FloatStorage",
    "DoubleStorage",
    "HalfStorage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "BFloat16Storage",
    "ComplexFloatStorage",
    "ComplexDoubleStorage",
    "QUInt8Storage",
    "QInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
    "UntypedStorage",
    "TypedStorage",
    "Size",
    "Tensor",
    "device",
];

const WEIGHTS_ONLY: &[&str] = &[
    "collections.OrderedDict",
    "collections.Counter",
    "torch.nn.parameter.Parameter",
    "torch.nn.parameter.Buffer",
    "torch.serialization._get_layout",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_qtensor",
    "torch._tensor._rebuild_from_type_v2",
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.set",
    "builtins.frozenset",
    "builtins.complex",
    "builtins.slice",
    "builtins.range",
];

const STANDARD_EXTRA: &[&str] = &[
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.*",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "joblib.numpy_pickle_compat.NDArrayWrapper",
    "joblib.numpy_pickle_compat.ZNDArrayWrapper",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.str",
    "builtins.bytes",
    "collections.defaultdict",
    "collections.deque",
];

/// Modules where any global is dangerous, with the category.
const DANGEROUS_MODULES: &[(&str, Category)] = &[
    ("os", Category::CodeExecution),
    ("posix", Category::CodeExecution),
    ("nt", Category::CodeExecution),
    ("subprocess", Category::CodeExecution),
    ("_posixsubprocess", Category::CodeExecution),
    ("sys", Category::CodeExecution),
    ("pty", Category::CodeExecution),
    ("commands", Category::CodeExecution),
    ("code", Category::CodeExecution),
    ("codeop", Category::CodeExecution),
    ("ctypes", Category::CodeExecution),
    ("_ctypes", Category::CodeExecution),
    ("cffi", Category::CodeExecution),
    ("timeit", Category::CodeExecution),
    ("trace", Category::CodeExecution),
    ("cProfile", Category::CodeExecution),
    ("profile", Category::CodeExecution),
    ("pdb", Category::CodeExecution),
    ("bdb", Category::CodeExecution),
    ("multiprocessing", Category::CodeExecution),
    ("asyncio", Category::CodeExecution),
    ("threading", Category::CodeExecution),
    ("_thread", Category::CodeExecution),
    ("signal", Category::CodeExecution),
    ("platform", Category::CodeExecution),
    ("venv", Category::CodeExecution),
    ("ensurepip", Category::CodeExecution),
    ("pip", Category::CodeExecution),
    ("setuptools", Category::CodeExecution),
    ("distutils", Category::CodeExecution),
    ("numpy.f2py", Category::CodeExecution),
    ("numpy.testing", Category::CodeExecution),
    ("numpy.distutils", Category::CodeExecution),
    ("torch.hub", Category::CodeExecution),
    ("torch.utils.cpp_extension", Category::CodeExecution),
    ("torch._dynamo", Category::CodeExecution),
    ("torch._inductor", Category::CodeExecution),
    ("torch.jit", Category::CodeExecution),
    ("torch._C", Category::CodeExecution),
    ("torch.ops", Category::CodeExecution),
    ("torch.fx", Category::CodeExecution),
    ("torch.package", Category::CodeExecution),
    ("tensorflow.python.ops.script_ops", Category::CodeExecution),
    ("jinja2", Category::CodeExecution),
    ("IPython", Category::CodeExecution),
    ("_io", Category::FileAccess),
    ("io", Category::FileAccess),
    ("pathlib", Category::FileAccess),
    ("shutil", Category::FileAccess),
    ("tempfile", Category::FileAccess),
    ("glob", Category::FileAccess),
    ("fileinput", Category::FileAccess),
    ("linecache", Category::FileAccess),
    ("zipfile", Category::FileAccess),
    ("tarfile", Category::FileAccess),
    ("sqlite3", Category::FileAccess),
    ("dbm", Category::FileAccess),
    ("mmap", Category::FileAccess),
    ("logging.config", Category::FileAccess),
    ("socket", Category::NetworkAccess),
    ("_socket", Category::NetworkAccess),
    ("socketserver", Category::NetworkAccess),
    ("ssl", Category::NetworkAccess),
    ("requests", Category::NetworkAccess),
    ("urllib", Category::NetworkAccess),
    ("urllib2", Category::NetworkAccess),
    ("urllib3", Category::NetworkAccess),
    ("http", Category::NetworkAccess),
    ("httplib", Category::NetworkAccess),
    ("httpx", Category::NetworkAccess),
    ("aiohttp", Category::NetworkAccess),
    ("ftplib", Category::NetworkAccess),
    ("smtplib", Category::NetworkAccess),
    ("telnetlib", Category::NetworkAccess),
    ("poplib", Category::NetworkAccess),
    ("imaplib", Category::NetworkAccess),
    ("nntplib", Category::NetworkAccess),
    ("xmlrpc", Category::NetworkAccess),
    ("webbrowser", Category::NetworkAccess),
    ("paramiko", Category::NetworkAccess),
    ("boto3", Category::NetworkAccess),
    ("botocore", Category::NetworkAccess),
    ("pickle", Category::NestedDeserialization),
    ("_pickle", Category::NestedDeserialization),
    ("cPickle", Category::NestedDeserialization),
    ("pickletools", Category::NestedDeserialization),
    ("dill", Category::NestedDeserialization),
    ("cloudpickle", Category::NestedDeserialization),
    ("marshal", Category::NestedDeserialization),
    ("shelve", Category::NestedDeserialization),
    ("jsonpickle", Category::NestedDeserialization),
    ("yaml", Category::NestedDeserialization),
    ("_yaml", Category::NestedDeserialization),
    ("importlib", Category::ImportMachinery),
    ("imp", Category::ImportMachinery),
    ("_imp", Category::ImportMachinery),
    ("pkgutil", Category::ImportMachinery),
    ("zipimport", Category::ImportMachinery),
    ("runpy", Category::ImportMachinery),
    ("site", Category::ImportMachinery),
    ("_frozen_importlib", Category::ImportMachinery),
    ("_frozen_importlib_external", Category::ImportMachinery),
];

/// Single dangerous globals in otherwise ordinary modules.
const DANGEROUS_GLOBALS: &[(&str, Category)] = &[
    ("builtins.eval", Category::CodeExecution),
    ("builtins.exec", Category::CodeExecution),
    ("builtins.execfile", Category::CodeExecution),
    ("builtins.compile", Category::CodeExecution),
    ("builtins.open", Category::FileAccess),
    ("builtins.input", Category::CodeExecution),
    ("builtins.breakpoint", Category::CodeExecution),
    ("builtins.getattr", Category::CodeExecution),
    ("builtins.setattr", Category::CodeExecution),
    ("builtins.delattr", Category::CodeExecution),
    ("builtins.globals", Category::CodeExecution),
    ("builtins.locals", Category::CodeExecution),
    ("builtins.vars", Category::CodeExecution),
    ("builtins.apply", Category::CodeExecution),
    ("builtins.type", Category::CodeExecution),
    ("builtins.memoryview", Category::CodeExecution),
    ("builtins.__import__", Category::ImportMachinery),
    ("builtins.help", Category::CodeExecution),
    ("builtins.exit", Category::CodeExecution),
    ("builtins.quit", Category::CodeExecution),
    ("types.CodeType", Category::CodeExecution),
    ("types.FunctionType", Category::CodeExecution),
    ("types.LambdaType", Category::CodeExecution),
    ("types.MethodType", Category::CodeExecution),
    ("types.ModuleType", Category::ImportMachinery),
    ("operator.attrgetter", Category::CodeExecution),
    ("operator.methodcaller", Category::CodeExecution),
    ("operator.call", Category::CodeExecution),
    ("functools.partial", Category::CodeExecution),
    ("functools.reduce", Category::CodeExecution),
    ("torch.load", Category::NestedDeserialization),
    ("torch.serialization.load", Category::NestedDeserialization),
    ("torch.serialization._load", Category::NestedDeserialization),
    (
        "torch.storage._load_from_bytes",
        Category::NestedDeserialization,
    ),
    ("torch.save", Category::FileAccess),
    ("torch.serialization.save", Category::FileAccess),
    ("torch.from_file", Category::FileAccess),
    ("numpy.load", Category::NestedDeserialization),
    ("numpy.lib.npyio.load", Category::NestedDeserialization),
    ("numpy.fromfile", Category::FileAccess),
    ("numpy.save", Category::FileAccess),
    ("numpy.memmap", Category::FileAccess),
    ("numpy.loadtxt", Category::FileAccess),
    ("numpy.genfromtxt", Category::FileAccess),
    ("joblib.load", Category::NestedDeserialization),
    ("joblib.numpy_pickle.load", Category::NestedDeserialization),
    ("joblib.dump", Category::FileAccess),
    ("pandas.read_pickle", Category::NestedDeserialization),
    (
        "pandas.io.pickle.read_pickle",
        Category::NestedDeserialization,
    ),
    ("keras.models.load_model", Category::NestedDeserialization),
    (
        "tensorflow.keras.models.load_model",
        Category::NestedDeserialization,
    ),
    ("tensorflow.io.read_file", Category::FileAccess),
    ("tensorflow.io.write_file", Category::FileAccess),
    ("logging.FileHandler", Category::FileAccess),
    ("codecs.open", Category::FileAccess),
];

fn matches(pattern: &str, full: &str, module: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(m) => module == m || module.starts_with(&format!("{m}.")),
        None => pattern == full,
    }
}

fn module_in(module: &str, m: &str) -> bool {
    module == m
        || module
            .strip_prefix(m)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Python 2 module names the unpickler maps to Python 3 ones (`_compat_pickle`).
pub fn normalize_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        "cPickle" => "pickle",
        "exceptions" => "builtins",
        "UserDict" => "collections",
        "urllib2" => "urllib.request",
        "httplib" => "http.client",
        "commands" => "subprocess",
        _ => module,
    }
}

impl GlobalPolicy {
    /// Classifies `module.name` as found in a pickle.
    pub fn classify(&self, module: &str, name: &str) -> GlobalVerdict {
        let module = normalize_module(module.trim_end_matches(['\r']));
        let full = format!("{module}.{name}");
        // `find_class` resolves dotted names with getattr: the first component is what is
        // imported, dunder components walk to anything (`object.__subclasses__`).
        let first = name.split('.').next().unwrap_or(name);
        let first_full = format!("{module}.{first}");
        if let Some(p) = self
            .deny
            .iter()
            .find(|p| matches(p, &full, module) || matches(p, &first_full, module))
        {
            return GlobalVerdict {
                verdict: Verdict::Dangerous,
                category: Category::PolicyDeny,
                reason: format!("denied by the policy's models.pickle.deny entry {p:?}"),
            };
        }
        if name.split('.').any(|c| c.starts_with("__") && c.len() > 2) {
            return GlobalVerdict {
                verdict: Verdict::Dangerous,
                category: Category::CodeExecution,
                reason:
                    "dotted name walks dunder attributes at load time (find_class getattr chain)"
                        .into(),
            };
        }
        if module.is_empty()
            || name.is_empty()
            || !module
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return GlobalVerdict {
                verdict: Verdict::Dangerous,
                category: Category::ImportMachinery,
                reason: "module name is not a plain dotted identifier".into(),
            };
        }
        if let Some((_, cat)) = DANGEROUS_GLOBALS
            .iter()
            .find(|(g, _)| *g == full || *g == first_full)
        {
            return dangerous(*cat, &full);
        }
        if let Some((_, cat)) = DANGEROUS_MODULES.iter().find(|(m, _)| module_in(module, m)) {
            return dangerous(*cat, &full);
        }
        if let Some(p) = self.allow.iter().find(|p| matches(p, &full, module)) {
            return GlobalVerdict {
                verdict: Verdict::Safe,
                category: Category::UnknownGlobal,
                reason: format!("allowed by the policy's models.pickle.allow entry {p:?}"),
            };
        }
        if self.profile_allows(module, name, &full) {
            return GlobalVerdict {
                verdict: Verdict::Safe,
                category: Category::UnknownGlobal,
                reason: "in the allowlist profile".into(),
            };
        }
        GlobalVerdict {
            verdict: Verdict::Suspicious,
            category: Category::UnknownGlobal,
            reason:
                "global is not in the allowlist profile; it imports and may run code at load time"
                    .into(),
        }
    }

    fn profile_allows(&self, module: &str, name: &str, full: &str) -> bool {
        if module == "torch" && TORCH_DTYPES.contains(&name) {
            return true;
        }
        if WEIGHTS_ONLY.contains(&full) {
            return true;
        }
        self.profile == Profile::Standard && STANDARD_EXTRA.iter().any(|p| matches(p, full, module))
    }
}

fn dangerous(cat: Category, full: &str) -> GlobalVerdict {
    let why = match cat {
        Category::CodeExecution => "runs code or calls arbitrary callables at load time",
        Category::FileAccess => "reads or writes files at load time",
        Category::NetworkAccess => "opens network connections at load time",
        Category::NestedDeserialization => "deserializes more untrusted data at load time",
        Category::ImportMachinery => "imports arbitrary modules at load time",
        _ => "dangerous at load time",
    };
    GlobalVerdict {
        verdict: Verdict::Dangerous,
        category: cat,
        reason: format!("{full} {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("os", "system", Verdict::Dangerous; "os system")]
    #[test_case("posix", "system", Verdict::Dangerous; "posix")]
    #[test_case("__builtin__", "eval", Verdict::Dangerous; "py2 builtins")]
    #[test_case("builtins", "getattr", Verdict::Dangerous; "getattr")]
    #[test_case("torch._utils", "_rebuild_tensor_v2", Verdict::Safe; "torch rebuild")]
    #[test_case("torch", "FloatStorage", Verdict::Safe; "storage")]
    #[test_case("collections", "OrderedDict", Verdict::Safe; "ordered dict")]
    #[test_case("numpy.core.multiarray", "_reconstruct", Verdict::Safe; "numpy standard")]
    #[test_case("mypkg.models", "Net", Verdict::Suspicious; "unknown")]
    #[test_case("builtins", "object.__subclasses__", Verdict::Dangerous; "dunder walk")]
    #[test_case("os.path", "join", Verdict::Dangerous; "submodule of os")]
    #[test_case("osx", "thing", Verdict::Suspicious; "prefix is not a module")]
    #[test_case("torch", "load", Verdict::Dangerous; "nested torch load")]
    #[test_case("importlib", "import_module", Verdict::Dangerous; "import machinery")]
    #[test_case("o s", "system", Verdict::Dangerous; "odd module")]
    fn standard(module: &str, name: &str, want: Verdict) {
        assert_eq!(GlobalPolicy::default().classify(module, name).verdict, want);
    }

    #[test]
    fn weights_only_refuses_numpy() {
        let p = GlobalPolicy {
            profile: Profile::WeightsOnly,
            ..GlobalPolicy::default()
        };
        assert_eq!(
            p.classify("numpy.core.multiarray", "_reconstruct").verdict,
            Verdict::Suspicious
        );
        assert_eq!(p.classify("torch", "Size").verdict, Verdict::Safe);
    }

    #[test]
    fn user_lists() {
        let p = GlobalPolicy {
            profile: Profile::Standard,
            allow: vec!["mypkg.*".into(), "os.system".into()],
            deny: vec!["collections.OrderedDict".into()],
        };
        assert_eq!(p.classify("mypkg.models", "Net").verdict, Verdict::Safe);
        assert_eq!(p.classify("os", "system").verdict, Verdict::Dangerous);
        let d = p.classify("collections", "OrderedDict");
        assert_eq!(d.verdict, Verdict::Dangerous);
        assert_eq!(d.category, Category::PolicyDeny);
    }
}
