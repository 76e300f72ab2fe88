using Optim.Core;

namespace Optim;

/// <summary>
/// An MMEngine assertion (Python's <c>AssertionError</c>) raised at run time, e.g. a zero loss factor
/// after the known end of training.
/// </summary>
public class OptimAssertionException : InvalidOperationException
{
    /// <summary>Creates the exception with MMEngine's message.</summary>
    public OptimAssertionException(string message) : base(message) { }
}

/// <summary>A state dict that does not fit the object it is loaded into; the object is left unchanged.</summary>
public class StateDictException : Exception
{
    /// <summary>Creates the exception naming what did not fit.</summary>
    public StateDictException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>Turns the core's rule violations into the .NET exceptions users expect.</summary>
internal static class Raise
{
    /// <summary>
    /// Argument checks (Python's AssertionError, ValueError, TypeError on constructor input) become
    /// <see cref="ArgumentException"/>; a missing name becomes <see cref="KeyNotFoundException"/>;
    /// run-time assertions become <see cref="OptimAssertionException"/>.
    /// </summary>
    public static Exception From(RuleError error, string? paramName = null, bool runtime = false)
    {
        if (error.Kind.IsKey) return new KeyNotFoundException(error.Message);
        if (error.Kind.IsRuntime) return new InvalidOperationException(error.Message);
        if (runtime) return new OptimAssertionException(error.Message);
        return new ArgumentException(error.Message, paramName);
    }

    /// <summary>The value of a core result, or the matching exception.</summary>
    public static T Unwrap<T>(Microsoft.FSharp.Core.FSharpResult<T, RuleError> result, string? paramName = null, bool runtime = false) =>
        result.IsOk ? result.ResultValue : throw From(result.ErrorValue, paramName, runtime);
}
