package dev.qwenedge.demo

import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.os.BatteryManager
import android.os.SystemClock
import dev.qwenedge.core.EnergyRecord
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.delay
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch
import java.io.File

/**
 * Samples the battery's current (BatteryManager.BATTERY_PROPERTY_CURRENT_NOW, microamperes) and voltage
 * (the sticky ACTION_BATTERY_CHANGED broadcast, millivolts) every periodMs during a generation. Meaningful
 * only on battery (unplug USB; use adb over Wi-Fi), and only as fine as the phone's fuel gauge updates.
 */
class BatterySampler(private val context: Context, private val periodMs: Long = 100) {
    private val battery = context.getSystemService(Context.BATTERY_SERVICE) as BatteryManager
    private var job: Job? = null
    var record = EnergyRecord()
        private set

    private fun voltageMillivolts(): Long {
        val status = context.registerReceiver(null, IntentFilter(Intent.ACTION_BATTERY_CHANGED))
        return status?.getIntExtra(BatteryManager.EXTRA_VOLTAGE, 0)?.toLong() ?: 0L
    }

    fun start(scope: CoroutineScope) {
        record = EnergyRecord()
        job = scope.launch(Dispatchers.IO) {
            while (isActive) {
                val current = battery.getLongProperty(BatteryManager.BATTERY_PROPERTY_CURRENT_NOW)
                record.add(SystemClock.elapsedRealtime(), current, voltageMillivolts())
                delay(periodMs)
            }
        }
    }

    fun stop() {
        job?.cancel()
        job = null
    }

    /** Writes the record bench imports: adb pull it, then python -m exporter bench --android-energy FILE. */
    fun export(bundleName: String, tokens: Int): File {
        val out = File(context.getExternalFilesDir(null), "energy-$bundleName-${System.currentTimeMillis()}.json")
        out.writeText(record.toJson("${android.os.Build.MANUFACTURER} ${android.os.Build.MODEL}", bundleName, tokens))
        return out
    }
}
