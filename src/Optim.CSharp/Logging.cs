using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Optim;

/// <summary>
/// Where Optim logs (MMEngine's "current logger"): warnings such as accumulation with BatchNorm, the
/// paramwise option lines, scheduler warnings, skipped steps.
/// </summary>
/// <remarks>
/// Pass an <see cref="ILoggerFactory"/> to what you build: <c>Builder.build_optim_wrapper(model, cfg, loggerFactory)</c>
/// or a wrapper's constructor. Everything built for that call logs through it — the constructor, the wrapper, its
/// loss scaler and the schedulers attached to the wrapper — so two models trained side by side log to their own
/// factories. Objects given no factory follow <see cref="LoggerFactory"/>, the process-wide fallback (read each
/// time they log, so setting it later still takes effect), which discards everything unless set.
/// </remarks>
public static class OptimLogging
{
    // The factory of the build in progress on this flow of execution: wrappers a registry creates inside
    // build_optim_wrapper are made by code that cannot be handed the factory (registered delegates).
    private static readonly AsyncLocal<ILoggerFactory?> Building = new();

    /// <summary>The fallback factory for objects built without one (default: discards everything).</summary>
    public static ILoggerFactory LoggerFactory { get; set; } = NullLoggerFactory.Instance;

    /// <summary>A logger for an Optim category (a class name): the build's factory's, else one that follows the fallback.</summary>
    public static ILogger CreateLogger(string category) => LoggerFor(Building.Value, category);

    /// <summary>The factory an object built now keeps: the one it was given, else the build's; null: follow the fallback.</summary>
    internal static ILoggerFactory? Resolve(ILoggerFactory? given) => given ?? Building.Value;

    /// <summary>A logger from <paramref name="kept"/>, or (null) one that follows <see cref="LoggerFactory"/>.</summary>
    internal static ILogger LoggerFor(ILoggerFactory? kept, string category) =>
        kept?.CreateLogger(category) ?? new FollowingLogger(category);

    /// <summary>Makes <paramref name="factory"/> the build's factory until disposed (nothing changes for null).</summary>
    internal static IDisposable During(ILoggerFactory? factory)
    {
        if (factory is null) return NoScope.Instance;
        var previous = Building.Value;
        Building.Value = factory;
        return new Restore(previous);
    }

    private sealed class Restore(ILoggerFactory? previous) : IDisposable
    {
        public void Dispose() => Building.Value = previous;
    }

    private sealed class NoScope : IDisposable
    {
        public static readonly NoScope Instance = new();
        public void Dispose() { }
    }

    /// <summary>Logs through whatever <see cref="LoggerFactory"/> is when it logs (one logger per factory seen).</summary>
    private sealed class FollowingLogger(string category) : ILogger
    {
        private sealed record Made(ILoggerFactory Factory, ILogger Logger);
        private Made? _made;

        private ILogger Current
        {
            get
            {
                var factory = LoggerFactory;
                var made = _made;
                if (made is null || !ReferenceEquals(made.Factory, factory)) _made = made = new Made(factory, factory.CreateLogger(category));
                return made.Logger;
            }
        }

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => Current.BeginScope(state);
        public bool IsEnabled(LogLevel logLevel) => Current.IsEnabled(logLevel);
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Current.Log(logLevel, eventId, state, exception, formatter);
    }
}
