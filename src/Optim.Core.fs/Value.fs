namespace Optim.Core

open System
open System.Globalization

/// A Python-like value: what MMEngine's configs, param groups and state dicts hold.
/// Dicts keep insertion order (a list of pairs), as Python's do.
[<RequireQualifiedAccess>]
type PyValue =
    | None
    | Bool of bool
    | Int of int64
    | Float of float
    | Str of string
    | List of PyValue list
    | Tuple of PyValue list
    | Dict of (string * PyValue) list

/// Python's `str()`/`repr()` formatting, so that logs and reprs match MMEngine's byte for byte.
module PyFormat =

    /// `repr(float)` as CPython prints it: shortest round-trip digits; scientific notation when the
    /// decimal exponent is below -4 or at least 16; `.0` on integral values in fixed notation.
    let float (x: float) : string =
        if Double.IsNaN x then "nan"
        elif Double.IsPositiveInfinity x then "inf"
        elif Double.IsNegativeInfinity x then "-inf"
        elif x = 0.0 then (if 1.0 / x < 0.0 then "-0.0" else "0.0")
        else
            // "E16" is not shortest; "R" is (on .NET Core 3.0+). Re-render R's digits per Python's rules.
            let r = x.ToString("R", CultureInfo.InvariantCulture)
            let negative = r.StartsWith "-"
            let body = if negative then r.Substring 1 else r
            let mantissa, exp10 =
                match body.IndexOfAny [| 'E'; 'e' |] with
                | -1 -> body, 0
                | i -> body.Substring(0, i), int (body.Substring(i + 1))
            let intPart, fracPart =
                match mantissa.IndexOf '.' with
                | -1 -> mantissa, ""
                | i -> mantissa.Substring(0, i), mantissa.Substring(i + 1)
            let digitsRaw = intPart + fracPart
            let lead = digitsRaw.Length - digitsRaw.TrimStart('0').Length
            let digits = digitsRaw.TrimStart('0').TrimEnd('0')
            // value = 0.d1d2d3... * 10^decpt
            let decpt = intPart.Length - lead + exp10
            let sign = if negative then "-" else ""
            let sciExp = decpt - 1
            if sciExp < -4 || sciExp >= 16 then
                let m = if digits.Length = 1 then digits else digits.Substring(0, 1) + "." + digits.Substring 1
                let e = if sciExp < 0 then sprintf "-%02d" (-sciExp) else sprintf "+%02d" sciExp
                sign + m + "e" + e
            elif decpt <= 0 then
                sign + "0." + String('0', -decpt) + digits
            elif decpt >= digits.Length then
                sign + digits + String('0', decpt - digits.Length) + ".0"
            else
                sign + digits.Substring(0, decpt) + "." + digits.Substring decpt

    let private quote (s: string) =
        // Python prefers single quotes unless the text holds one and no double quote.
        if s.Contains "'" && not (s.Contains "\"") then "\"" + s + "\""
        else "'" + s.Replace("\\", "\\\\").Replace("'", "\\'") + "'"

    /// `repr(value)`.
    let rec repr (v: PyValue) : string =
        match v with
        | PyValue.None -> "None"
        | PyValue.Bool b -> if b then "True" else "False"
        | PyValue.Int i -> string i
        | PyValue.Float f -> float f
        | PyValue.Str s -> quote s
        | PyValue.List xs -> "[" + String.Join(", ", xs |> List.map repr) + "]"
        | PyValue.Tuple [ x ] -> "(" + repr x + ",)"
        | PyValue.Tuple xs -> "(" + String.Join(", ", xs |> List.map repr) + ")"
        | PyValue.Dict kvs -> "{" + String.Join(", ", kvs |> List.map (fun (k, x) -> quote k + ": " + repr x)) + "}"

    /// `str(value)`: as repr, except that a top-level string is printed bare.
    let str (v: PyValue) : string =
        match v with
        | PyValue.Str s -> s
        | other -> repr other

/// Helpers on Python-like values.
module PyValue =

    /// The value under `key` of an ordered dict, if present.
    let tryFind (key: string) (kvs: (string * PyValue) list) =
        kvs |> List.tryFind (fun (k, _) -> k = key) |> Option.map snd

    /// A number as a double (bools are not numbers here, unlike Python).
    let tryNumber (v: PyValue) =
        match v with
        | PyValue.Int i -> Some(double i)
        | PyValue.Float f -> Some f
        | _ -> Option.None

    /// Sets `key` in an ordered dict: replaces in place when present, appends otherwise (Python's `d[k] = v`).
    let set (key: string) (value: PyValue) (kvs: (string * PyValue) list) =
        if kvs |> List.exists (fun (k, _) -> k = key) then
            kvs |> List.map (fun (k, v) -> if k = key then (k, value) else (k, v))
        else
            kvs @ [ key, value ]

    /// Removes `key` from an ordered dict.
    let remove (key: string) (kvs: (string * PyValue) list) = kvs |> List.filter (fun (k, _) -> k <> key)

    /// A short description of the value's kind, for error messages ("a number", "a string", ...).
    let kind (v: PyValue) =
        match v with
        | PyValue.None -> "null"
        | PyValue.Bool _ -> "a boolean"
        | PyValue.Int _ -> "an integer"
        | PyValue.Float _ -> "a number"
        | PyValue.Str _ -> "a string"
        | PyValue.List _ -> "a list"
        | PyValue.Tuple _ -> "a tuple"
        | PyValue.Dict _ -> "an object"
