using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Optim;

/// <summary>
/// Where Optim logs (MMEngine's "current logger"): warnings such as accumulation with BatchNorm and
/// the paramwise option lines. Set <see cref="LoggerFactory"/> once at start-up, e.g. to
/// <c>LoggerFactory.Create(b =&gt; b.AddConsole())</c>; the default discards everything.
/// </summary>
public static class OptimLogging
{
    /// <summary>The factory Optim creates its loggers from.</summary>
    public static ILoggerFactory LoggerFactory { get; set; } = NullLoggerFactory.Instance;

    /// <summary>A logger for an Optim category (a class name).</summary>
    public static ILogger CreateLogger(string category) => LoggerFactory.CreateLogger(category);
}
