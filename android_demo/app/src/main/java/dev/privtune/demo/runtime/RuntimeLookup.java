package dev.privtune.demo.runtime;

/**
 * Finds the ONNX Runtime implementation by class name, so the app's shell (UI, settings, scheduling,
 * networking, DP bookkeeping) builds without ONNX Runtime. When the ORT classes are not in the APK
 * the lookup reports exactly that; nothing else stands in for them.
 */
public final class RuntimeLookup {
    /** The ORT implementation, in the app's {@code ort} source set. */
    public static final String ORT_RUNTIME_CLASS = "dev.privtune.demo.ort.OrtRuntime";
    /** Shown when the APK was built without the {@code ort} source set. */
    public static final String NOT_IN_BUILD = "ONNX Runtime is not in this build: this APK is the ORT-free shell"
            + " (built offline by android_demo/build.sh). Build the 'ort' flavour with Gradle to classify and train.";

    private final OnDeviceRuntime runtime;
    private final String reason;

    private RuntimeLookup(OnDeviceRuntime runtime, String reason) {
        this.runtime = runtime;
        this.reason = reason;
    }

    /** Looks up {@link #ORT_RUNTIME_CLASS}. */
    public static RuntimeLookup find() {
        return find(ORT_RUNTIME_CLASS);
    }

    /** Looks up a runtime class by name (no-argument constructor, implementing {@link OnDeviceRuntime}). */
    public static RuntimeLookup find(String className) {
        Class<?> type;
        try {
            type = Class.forName(className);
        } catch (ClassNotFoundException e) {
            return new RuntimeLookup(null, NOT_IN_BUILD);
        }
        try {
            Object instance = type.getConstructor().newInstance();
            if (!(instance instanceof OnDeviceRuntime)) {
                return new RuntimeLookup(null, className + " does not implement OnDeviceRuntime");
            }
            return new RuntimeLookup((OnDeviceRuntime) instance, null);
        } catch (LinkageError e) {
            return new RuntimeLookup(null, "ONNX Runtime is in this build but failed to load: " + e);
        } catch (ReflectiveOperationException e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            return new RuntimeLookup(null, "ONNX Runtime is in this build but failed to start: " + cause);
        }
    }

    /** Whether a runtime was found and started. */
    public boolean available() {
        return runtime != null;
    }

    /** Why there is no runtime (null when available). */
    public String reason() {
        return reason;
    }

    /**
     * The runtime.
     *
     * @throws IllegalStateException with {@link #reason()} when there is none
     */
    public OnDeviceRuntime runtime() {
        if (runtime == null) {
            throw new IllegalStateException(reason);
        }
        return runtime;
    }
}
