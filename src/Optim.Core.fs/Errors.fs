namespace Optim.Core

/// What kind of failure MMEngine reports for a rule, so the facade can raise the matching .NET
/// exception (Python's AssertionError/ValueError/TypeError/KeyError/RuntimeError).
[<RequireQualifiedAccess>]
type ErrorKind =
    | Assertion
    | Value
    | Type
    | Key
    | Runtime

/// A rule violated: its kind and MMEngine's message (tests match on message substrings).
type RuleError = { Kind: ErrorKind; Message: string }

module RuleError =
    let assertion msg = { Kind = ErrorKind.Assertion; Message = msg }
    let value msg = { Kind = ErrorKind.Value; Message = msg }
    let typeError msg = { Kind = ErrorKind.Type; Message = msg }
    let key msg = { Kind = ErrorKind.Key; Message = msg }
    let runtime msg = { Kind = ErrorKind.Runtime; Message = msg }

/// Python-like arithmetic and type names on `PyValue` numbers.
module PyNum =

    /// Python's `type(v).__name__`.
    let typeName (v: PyValue) =
        match v with
        | PyValue.None -> "NoneType"
        | PyValue.Bool _ -> "bool"
        | PyValue.Int _ -> "int"
        | PyValue.Float _ -> "float"
        | PyValue.Str _ -> "str"
        | PyValue.List _ -> "list"
        | PyValue.Tuple _ -> "tuple"
        | PyValue.Dict _ -> "dict"

    /// Python's `str(type(v))`, e.g. `<class 'list'>` (what MMEngine puts in its TypeError messages).
    let typeRepr (v: PyValue) = sprintf "<class '%s'>" (typeName v)

    /// Is `v` a Python number (int, float, or bool, which Python treats as an int)?
    let isNumber (v: PyValue) =
        match v with
        | PyValue.Int _ | PyValue.Float _ | PyValue.Bool _ -> true
        | _ -> false

    let private asInt (v: PyValue) =
        match v with
        | PyValue.Int i -> Some i
        | PyValue.Bool b -> Some(if b then 1L else 0L)
        | _ -> Option.None

    /// A number as a double, as Python's `float(v)` (bools count as 0/1).
    let toDouble (v: PyValue) =
        match v with
        | PyValue.Int i -> Some(double i)
        | PyValue.Float f -> Some f
        | PyValue.Bool b -> Some(if b then 1.0 else 0.0)
        | _ -> Option.None

    /// Python's `a * b` on numbers: int × int stays an int; otherwise both are widened to double and
    /// multiplied once, in this order (so `0.9 * 0.1` is `0.09000000000000001`, exactly as Python).
    /// Anything else is Python's TypeError message.
    let mul (a: PyValue) (b: PyValue) : Result<PyValue, string> =
        match asInt a, asInt b with
        | Some x, Some y -> Ok(PyValue.Int(x * y))
        | _ ->
            match toDouble a, toDouble b with
            | Some x, Some y -> Ok(PyValue.Float(x * y))
            | _ -> Error(sprintf "unsupported operand type(s) for *: '%s' and '%s'" (typeName a) (typeName b))

    /// Python truthiness.
    let truthy (v: PyValue) =
        match v with
        | PyValue.None -> false
        | PyValue.Bool b -> b
        | PyValue.Int i -> i <> 0L
        | PyValue.Float f -> f <> 0.0
        | PyValue.Str s -> s <> ""
        | PyValue.List xs | PyValue.Tuple xs -> not xs.IsEmpty
        | PyValue.Dict kvs -> not kvs.IsEmpty

/// Python's ordering of `str` values: by Unicode code point (not UTF-16 code unit), and `len` in
/// code points. For text without characters beyond U+FFFF this is .NET's ordinal order and `Length`.
module PyStr =

    let private runes (s: string) = s.EnumerateRunes() |> Seq.map (fun r -> r.Value) |> Seq.toArray

    /// `len(s)` in Python: the number of code points.
    let length (s: string) = s.EnumerateRunes() |> Seq.length

    /// Python's `a < b` on str as a comparison result (-1, 0, 1).
    let compare (a: string) (b: string) =
        let ra = runes a
        let rb = runes b
        let n = min ra.Length rb.Length
        let rec go i =
            if i = n then Operators.compare ra.Length rb.Length
            elif ra.[i] <> rb.[i] then Operators.compare ra.[i] rb.[i]
            else go (i + 1)
        go 0

    /// Python's `needle in haystack` for str.
    let contains (needle: string) (haystack: string) = haystack.Contains(needle, System.StringComparison.Ordinal)

/// One problem found in a configuration: where (a JSON path such as `optimizer.betas` or
/// `paramwise_cfg.custom_keys["backbone.layer0"].lr_mult`; empty for the whole config), which Python
/// exception MMEngine would raise, and what was expected.
type ConfigError =
    { Path: string
      Kind: ErrorKind
      Message: string }

    /// `path: message` (just the message for the whole config).
    override this.ToString() =
        if this.Path = "" then this.Message else this.Path + ": " + this.Message

/// Building JSON paths and errors.
module ConfigError =

    let private plain (k: string) =
        k <> ""
        && (System.Char.IsLetter k.[0] || k.[0] = '_')
        && k |> Seq.forall (fun c -> System.Char.IsLetterOrDigit c || c = '_')

    let private relaxed =
        System.Text.Json.JsonSerializerOptions(Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping)

    /// A string as a JSON string literal, readable (non-ASCII kept, only quotes and controls escaped).
    let quote (s: string) = System.Text.Json.JsonSerializer.Serialize(s, relaxed)

    /// The path of member `key` under `parent`: `parent.key`, or `parent["key"]` when the key is
    /// not a plain identifier (custom keys hold dots).
    let key (parent: string) (key: string) =
        if plain key then (if parent = "" then key else parent + "." + key)
        else parent + "[" + quote key + "]"

    /// The path of element `i` under `parent`.
    let index (parent: string) (i: int) = sprintf "%s[%d]" parent i

    /// An error at `path`.
    let at (path: string) (kind: ErrorKind) (message: string) = { Path = path; Kind = kind; Message = message }

    /// A rule error at `path`.
    let ofRule (path: string) (e: RuleError) = { Path = path; Kind = e.Kind; Message = e.Message }

    /// The same error, its path placed under `parent`.
    let under (parent: string) (e: ConfigError) =
        let path =
            if e.Path = "" then parent
            elif parent = "" then e.Path
            elif e.Path.StartsWith "[" then parent + e.Path
            else parent + "." + e.Path
        { e with Path = path }
